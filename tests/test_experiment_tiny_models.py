"""The tiny_models experiment (third report) end to end in its smoke mode: the comparison
table and figure, and VGG16's frozen blocks provably unchanged (from Keras-format weights)."""


import launch
import numpy as np
import pytest

from configs import tiny_models as tiny_models_config
from test_pretrained import write_keras2_weights
from tinyimagenet_jax import evaluation, writers
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common, tiny_models
from tinyimagenet_jax.models.vgg import VGG16_BLOCKS

from helpers import read_csv


def smoke_vgg16_layers(widths) -> dict[str, list[np.ndarray]]:
  """Random Keras-named conv weights shaped for the smoke's narrow VGG16 on grey digits."""
  rng = np.random.default_rng(0)
  layers, channels = {}, 1
  for block, ((_, convs), width) in enumerate(zip(VGG16_BLOCKS, widths), start=1):
    for conv in range(1, convs + 1):
      layers[f'block{block}_conv{conv}'] = [
          rng.standard_normal((3, 3, channels, width)).astype(np.float32),
          rng.standard_normal(width).astype(np.float32)]
      channels = width
  return layers


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke mode, its VGG16 runs from a Keras VGG16 .h5: (config, workdir, layers)."""
  config = tiny_models_config.get_config('smoke')
  layers = smoke_vgg16_layers(config.tiny_models.runs.vgg16_finetune.model.widths)
  config.init_from = str(tmp_path_factory.mktemp('weights') / 'vgg16_notop.h5')
  write_keras2_weights(config.init_from, layers)
  workdir = tmp_path_factory.mktemp('tiny_models')
  assert launch.run(config, str(workdir)) == 0
  return config, workdir, layers


def test_table_has_a_row_per_run_recomputed_from_its_metrics(smoke):
  config, workdir, _ = smoke
  rows = read_csv(workdir / 'models.csv')
  assert [row['run'] for row in rows] == list(config.tiny_models.runs)
  for row in rows:
    history = writers.read_history(str(workdir / row['run']))
    best = max(history, key=lambda record: record['val_top1'])
    assert int(row['epochs_run']) == len(history) == config.num_epochs
    assert int(row['best_val_epoch']) == best['epoch']
    for column, key in (('best_val_top1', 'val_top1'), ('best_val_top5', 'val_top5'),
                        ('test_top1', 'test_top1')):
      assert float(row[column]) == best[key]
    assert float(row['final_train_accuracy']) == history[-1]['train_accuracy']
    assert float(row['seconds_per_epoch']) == pytest.approx(
        np.mean([record['seconds'] for record in history]))
    pretrained = row['run'] in config.tiny_models.pretrained_runs
    assert row['initialised_from'] == (config.init_from if pretrained else 'scratch')
    assert int(row['parameters']) > 0
  assert (workdir / 'models.md').read_text().count('\n') == len(rows) + 2
  assert (workdir / 'val_accuracy.png').read_bytes()[:4] == b'\x89PNG'


def test_frozen_blocks_are_bitwise_unchanged_and_unfrozen_ones_trained(smoke):
  config, workdir, _ = smoke
  rows = read_csv(workdir / 'frozen_check.csv')
  runs = tiny_models.experiment_runs(config)
  frozen_runs = {name: run.optimizer.freeze for name, run in runs.items() if run.optimizer.freeze}
  assert [(row['run'], row['entry']) for row in rows] == [
      (name, entry) for name, entries in frozen_runs.items() for entry in entries]
  for row in rows:
    assert row['bitwise_equal_while_frozen'] == 'True'
    assert float(row['max_abs_diff_while_frozen']) == 0.0
    assert int(row['frozen_epochs']) + int(row['trained_epochs']) == config.num_epochs
    assert (float(row['max_abs_diff_at_end']) > 0) == (int(row['trained_epochs']) > 0)
  unfrozen = [row for row in rows if int(row['trained_epochs'])]
  assert [(row['run'], row['prefix']) for row in unfrozen] == [('vgg16_finetune', 'block5')]
  for name, snapshots in (('vgg16_finetune', [0, 1]), ('vgg16_transfer', [0])):
    kept = sorted((workdir / name / 'snapshots').glob('epoch_*.npz'))
    assert [int(path.stem.split('_')[1]) for path in kept] == snapshots


def test_frozen_blocks_end_with_the_keras_weights_while_the_head_trains(smoke):
  config, workdir, layers = smoke
  runs = tiny_models.experiment_runs(config)
  for name in config.tiny_models.pretrained_runs:
    final = evaluation.restore(runs[name], str(workdir / name)).state.params
    initial = common.initial_state(runs[name]).params
    for layer, (kernel, bias) in layers.items():
      frozen = name == 'vgg16_transfer' or not layer.startswith('block5')
      assert np.array_equal(final[layer]['kernel'], kernel) == frozen
      assert np.array_equal(final[layer]['bias'], bias) == frozen
    assert not np.array_equal(final['predictions']['kernel'], initial['predictions']['kernel'])


def test_options_it_cannot_use_are_one_line_errors():
  config = tiny_models_config.get_config('smoke')
  config.tiny_models.pretrained_runs = ('vgg19_transfer',)
  with pytest.raises(ConfigError, match="names 'vgg19_transfer', which is not a run"):
    tiny_models.run(config, '/nonexistent')
  config = tiny_models_config.get_config('smoke')
  config.data.validation_size = 0
  with pytest.raises(ConfigError, match='leaves no validation split'):
    tiny_models.run(config, '/nonexistent')
