"""The second report's experiment: its smoke run end to end, its stop bookkeeping, its features."""

import json

import jax
import launch
import ml_collections
import numpy as np
import pytest

from configs import cifar10_conv3 as cifar10_conv3_config
from tinyimagenet_jax import models, writers
from tinyimagenet_jax.experiments import cifar10_conv3

from helpers import read_csv

REGULARISATION = ['bn_dropout', 'bn_only', 'dropout_only', 'neither']
# The smoke's optimizer runs cut to the one written here (test_optim covers the
# others), to keep this file near a minute of CPU: each run compiles its own step.
OPTIMIZERS = ['proximal_adagrad']


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke mode trained, then evaluated, in one workdir: (config, workdir)."""
  workdir = tmp_path_factory.mktemp('cifar10_conv3')
  config = cifar10_conv3_config.get_config('smoke')
  config.conv3.optimizers = ml_collections.ConfigDict({name: 0.01 for name in OPTIMIZERS})
  assert launch.run(config, str(workdir)) == 0
  config.mode = 'evaluate'
  assert launch.run(config, str(workdir)) == 0
  config.mode = 'train'
  return config, workdir


def check_row(row: dict, history: list[dict], config) -> None:
  """A table row against a recomputation from the run's metrics.jsonl."""
  best = max(history, key=lambda record: record['val_top1'])
  assert int(row['epochs_run']) == len(history) == config.num_epochs
  assert row['stopped_by'] == 'cap'  # 3 epochs: 'rising' needs 4 records to fire
  for rule in ('rising', 'patience'):
    fired = cifar10_conv3.fires_at(history, cifar10_conv3.with_rule(config.early_stopping, rule))
    assert row[f'{rule}_fires_at'] == ('' if fired is None else str(fired))
  for key in ('train_accuracy', 'val_top1', 'train_loss', 'val_loss', 'test_top1'):
    assert float(row[key]) == history[-1][key]
  assert float(row['best_val_top1']) == best['val_top1']
  assert int(row['best_val_epoch']) == best['epoch']
  assert float(row['test_top1_at_best_val']) == best['test_top1']


def test_smoke_writes_both_tables_from_the_runs_metrics(smoke):
  config, workdir = smoke
  rows = read_csv(workdir / 'regularisation.csv')
  assert [row['run'] for row in rows] == [f'{name}_rising' for name in REGULARISATION]
  assert [(row['batch_norm'], float(row['dropout'])) for row in rows] == [
      ('True', 0.5), ('True', 0.0), ('False', 0.5), ('False', 0.0)]
  optimizers = read_csv(workdir / 'optimizers.csv')
  assert [row['optimizer'] for row in optimizers] == ['adam'] + OPTIMIZERS
  shared = set(rows[0]) & set(optimizers[0])  # the main run is Adam's row
  assert {key: optimizers[0][key] for key in shared} == {key: rows[0][key] for key in shared}
  assert [float(row['learning_rate']) for row in optimizers] == [0.01] * len(optimizers)
  for row in rows + optimizers:
    check_row(row, writers.read_history(str(workdir / row['run'])), config)
  for name in ('regularisation.png', 'optimizers.png'):
    assert (workdir / name).read_bytes()[:4] == b'\x89PNG'


def test_smoke_draws_tsne_of_both_layers_at_the_main_runs_snapshots(smoke):
  _, workdir = smoke
  expected = {f'tsne_{layer}_epoch{epoch}.png' for layer in ('flatten', 'fc1')
              for epoch in (1, 3)}
  assert {path.name for path in workdir.glob('tsne_*.png')} == expected
  assert all((workdir / name).read_bytes()[:4] == b'\x89PNG' for name in expected)
  assert sorted(path.name for path in workdir.glob('*/snapshots/*')) == [
      'epoch_001.npz', 'epoch_003.npz']
  assert (workdir / 'bn_dropout_rising' / 'snapshots').is_dir()


def test_evaluate_mode_tests_every_saved_run(smoke):
  _, workdir = smoke
  rows = read_csv(workdir / 'evaluation_test.csv')
  assert [row['run'] for row in rows] == (
      [f'{name}_rising' for name in REGULARISATION + OPTIMIZERS])
  for row in rows:
    saved = json.loads((workdir / row['run'] / 'evaluation_test.json').read_text())
    assert float(row['top1']) == saved['top1'] and int(row['count']) == 360
    history = writers.read_history(str(workdir / row['run']))
    np.testing.assert_allclose(saved['top1'], history[-1]['test_top1'], atol=1e-6)
    assert (workdir / row['run'] / 'evaluation_test_classes.csv').exists()


def stopping(rule: str, **overrides) -> ml_collections.ConfigDict:
  """config.early_stopping with `rule`, 3 rises, patience 2 on val_loss."""
  return ml_collections.ConfigDict(
      {'rule': rule, 'rises': 3, 'patience': 2, 'metric': 'val_loss', 'mode': 'min', **overrides})


def history_of(val_losses, train_losses=None) -> list[dict]:
  """Epoch records with these losses; the training loss falls unless given."""
  train_losses = train_losses or [2.0 - 0.1 * i for i in range(len(val_losses))]
  return [{'epoch': i + 1, 'val_loss': v, 'train_loss': t}
          for i, (v, t) in enumerate(zip(val_losses, train_losses))]


def test_each_rule_fires_at_the_first_epoch_it_holds():
  rising = history_of([1.0, 0.9, 1.0, 1.1, 1.2, 1.3])
  assert cifar10_conv3.fires_at(rising, stopping('rising')) == 5
  assert cifar10_conv3.fires_at(rising, stopping('patience')) == 4
  assert cifar10_conv3.fires_at(history_of([1.0, 0.9, 1.0, 1.1, 1.2], [2.0, 1.9, 1.8, 1.9, 1.7]),
                                stopping('rising')) is None  # the training loss rose once
  assert cifar10_conv3.fires_at(history_of([1.0, 0.9, 0.8]), stopping('patience')) is None


def test_stopped_by_names_the_rule_only_when_it_ended_the_run():
  config = ml_collections.ConfigDict({'early_stopping': stopping('rising')})
  assert cifar10_conv3.stopped_by(history_of([1.0, 0.9, 1.0, 1.1, 1.2]), config) == 'rising'
  assert cifar10_conv3.stopped_by(history_of([1.0, 0.9, 0.8]), config) == 'cap'


def test_each_stop_rule_gets_its_own_run_folders():
  config = cifar10_conv3_config.get_config('smoke')
  names = {}
  for rule in ('', 'rising', 'patience'):
    config.early_stopping.rule = rule
    names[rule] = set(cifar10_conv3.all_runs(config))
  assert 'bn_dropout' in names[''] and 'sgd_patience' in names['patience']
  assert not names[''] & names['rising'] and not names['rising'] & names['patience']
  assert len(names['rising']) == 7


def test_flatten_features_are_the_first_dense_layers_input():
  model = models.build_model(ml_collections.ConfigDict(
      {'name': 'conv3_bn', 'stages': (((3, 4),), ((3, 4),), ((3, 8),)), 'hidden': (6,)}), 10)
  images = np.random.default_rng(0).random((5, 16, 16, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  features = cifar10_conv3.layer_features(model, variables, images, batch_size=2)
  assert features['flatten'].shape == (5, 2 * 2 * 8) and features['fc1'].shape == (5, 6)
  dense = variables['params']['Dense_0']
  np.testing.assert_allclose(
      np.maximum(features['flatten'] @ dense['kernel'] + dense['bias'], 0), features['fc1'],
      rtol=1e-5, atol=1e-6)
