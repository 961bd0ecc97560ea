"""The fourth report's experiment: its smoke end to end, the STL-10 transfer under TFDS
mock data, the class filter (data.classes) and the CIFAR-100 python source."""

import contextlib
import io
import json
import os
import pathlib
import pickle
from unittest import mock

import launch
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import cifar100_lenet as cifar100_lenet_config
from conftest import extract
from tinyimagenet_jax import members, train, writers
from tinyimagenet_jax.analysis import classwise
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.validation import validate
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.errors import ConfigError, DataError
from tinyimagenet_jax.experiments import cifar100_lenet, common

from helpers import read_csv

PROMISED = ('baseline.csv', 'baseline.md', 'baseline.png', 'experiments.csv', 'experiments.md',
            'experiments.png', 'classwise_comparison.png', 'transfer.csv', 'transfer.md',
            'transfer.png', 'summary.json', 'summary.md') + tuple(
                f'classwise_{model}{suffix}' for model in ('lenet5', 'mlp')
                for suffix in cifar100_lenet.CLASSWISE_FILES)
TUNED = ('exp1_lenet5', 'exp1_mlp', 'exp2_lenet5', 'exp2_mlp')
STL10_NAMES = ('airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship',
               'truck')


def saved_config(run_dir) -> dict:
  return json.loads((run_dir / 'config.json').read_text())


def seed_histories(workdir, model: str, seeds: int) -> list[list[dict]]:
  """The baseline's member histories, from its one run of stacked members."""
  return members.member_histories(
      writers.read_history(str(workdir / f'baseline_{model}')), seeds)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke mode run once through launch.run: (config, workdir, printed output)."""
  workdir = tmp_path_factory.mktemp('cifar100_lenet')
  config = cifar100_lenet_config.get_config('smoke')
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert launch.run(config, str(workdir)) == 0
  return config, workdir, printed.getvalue()


def test_smoke_writes_every_promised_file(smoke):
  _, workdir, printed = smoke
  assert 'Experiment cifar100_lenet done; wrote baseline.csv, baseline.md' in printed
  for name in PROMISED:
    assert (workdir / name).stat().st_size > 0, name
    if name.endswith('.png'):
      assert (workdir / name).read_bytes()[:4] == b'\x89PNG', name


def test_baseline_table_is_the_spread_over_seeds(smoke):
  config, workdir, _ = smoke
  rows = read_csv(workdir / 'baseline.csv')
  assert [row['model'] for row in rows] == ['lenet5', 'mlp']
  summary = json.loads((workdir / 'summary.json').read_text())
  for row, summarised in zip(rows, summary['baseline']):
    histories = seed_histories(workdir, row['model'], config.study.seeds)
    final = np.array([history[-1]['test_top1'] for history in histories])
    expected = {'seeds': 3, 'test_top1_mean': final.mean(), 'test_top1_std': final.std(ddof=1),
                'test_top1_min': final.min(), 'test_top1_max': final.max(),
                'train_loss_mean': np.mean([h[-1]['train_loss'] for h in histories])}
    for key, value in expected.items():
      assert float(row[key]) == pytest.approx(value, abs=1e-12), key
      assert summarised[key] == pytest.approx(value, abs=1e-12), key
  member = saved_config(sorted(workdir.glob('baseline_mlp*'))[-1])
  assert member['optimizer']['schedule'] == 'constant'
  assert member['optimizer']['learning_rate'] == 1e-4 and member['batch_size'] == 32


def test_experiments_use_the_reports_settings(smoke):
  _, workdir, _ = smoke
  rows = read_csv(workdir / 'experiments.csv')
  assert [row['run'] for row in rows] == list(TUNED)
  for row in rows:
    assert float(row['final_test_top1']) == writers.read_history(
        str(workdir / row['run']))[-1]['test_top1']
  lenet = saved_config(workdir / 'exp1_lenet5')
  assert lenet['optimizer'].items() >= {
      'schedule': 'onecycle', 'learning_rate': 0.01, 'onecycle_div_factor': 50.0,
      'clip_global_norm': 1.0, 'weight_decay': 1e-3}.items()
  assert lenet['augment'].items() >= {'flip_prob': 0.1, 'rotate_degrees': 20.0,
                                      'color_jitter': [0.1, 0.1, 0.1],
                                      'sharpness': [2.0, 0.1]}.items()
  assert saved_config(workdir / 'exp1_mlp')['optimizer']['learning_rate'] == 1e-4
  assert saved_config(workdir / 'exp2_mlp')['model'] == {'name': 'mlp', 'hidden': [32, 16],
                                                          'dropout': 0.5}
  assert saved_config(workdir / 'exp2_lenet5')['model'] == {
      'name': 'lenet5', 'batch_norm': True, 'extra_dense': 84}


def best(workdir, model: str) -> str:
  return max((f'exp1_{model}', f'exp2_{model}'),
             key=lambda name: writers.read_history(str(workdir / name))[-1]['test_top1'])


def test_classwise_reports_are_of_each_models_best_run(smoke):
  _, workdir, _ = smoke
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['selected_by'] == 'test_top1'
  for model in ('lenet5', 'mlp'):
    report = summary['classwise'][model]
    assert report['run'] == best(workdir, model)
    confusion = np.loadtxt(workdir / f'classwise_{model}_confusion.csv', delimiter=',')
    assert confusion.shape == (10, 10) and confusion.sum() == 360  # the digits test split
    assert report['macro_f1'] == pytest.approx(classwise.macro_f1(confusion))
    assert report['accuracy'] == pytest.approx(
        writers.read_history(str(workdir / report['run']))[-1]['test_top1'], abs=1e-6)
    assert len(read_csv(workdir / f'classwise_{model}_classes.csv')) == 10


def test_transfer_starts_from_the_best_lenet_on_five_classes(smoke):
  _, workdir, _ = smoke
  source = best(workdir, 'lenet5')
  transfer, scratch = (saved_config(workdir / name) for name in ('stl5_transfer', 'stl5_scratch'))
  assert transfer['init_from'] == str(workdir / source) and scratch['init_from'] == ''
  assert transfer['model'] == saved_config(workdir / source)['model']
  for run in (transfer, scratch):
    assert run['data']['classes'] == ['0', '1', '2', '3', '4'] and run['num_epochs'] == 2
  rows = read_csv(workdir / 'transfer.csv')
  summary = json.loads((workdir / 'summary.json').read_text())['transfer']
  assert summary['source'] == source and [row['run'] for row in rows] == ['stl5_transfer',
                                                                          'stl5_scratch']
  for row in rows:
    final = writers.read_history(str(workdir / row['run']))[-1]['test_top1']
    assert float(row['final_test_top1']) == final == summary[row['run']]


def test_evaluate_mode_names_exactly_the_trained_runs(smoke, monkeypatch):
  config, workdir, _ = smoke
  monkeypatch.setattr(common, 'evaluate_runs', lambda runs, _: runs)
  config = ml_collections.ConfigDict(config.to_dict())
  config.mode = 'evaluate'
  runs = cifar100_lenet.run(config, str(workdir))
  assert set(runs) == {path.name for path in workdir.iterdir() if path.is_dir()}
  for name, run_config in runs.items():
    assert saved_config(workdir / name)['model'] == json.loads(
        json.dumps(run_config.model.to_dict())), name


def test_member_runs_are_one_run_whatever_the_backend():
  config = base_config()
  runs = common.member_runs('b', config, seeds=(4, 5))
  assert list(runs) == ['b'] and tuple(runs['b'].members.seeds) == (4, 5)
  assert tuple(runs['b'].members.learning_rates) == (config.optimizer.learning_rate,) * 2


def write_stl10_metadata(data_dir: pathlib.Path) -> None:
  """STL-10's real label names for TFDS mock data (which otherwise names classes 0..9)."""
  builder = tfds.builder('stl10', data_dir=str(data_dir), file_format='array_record')
  builder.info.features['label'].names = list(STL10_NAMES)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[1], num_bytes=0, filename_template=None)
      for split in ('train', 'test')]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


def test_transfer_from_cifar100_to_stl10_under_mock_data(tmp_path, capsys):
  """The full config's transfer section on mocked TFDS data: 96x96 STL-10 resized to
  32x32, five classes relabelled 0..4, every LeNet parameter but the head loaded."""
  write_stl10_metadata(tmp_path / 'tfds')
  config = cifar100_lenet_config.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  config.steps_per_epoch, config.num_epochs, config.progress_bar = 2, 1, False
  config.write_plots = False
  config.transfer.num_epochs = 1
  source = cifar100_lenet.tuned_runs(config)['exp1_lenet5']
  runs = cifar100_lenet.transfer_runs(config, source, str(tmp_path / 'source'))
  with tfds.testing.mock_data(num_examples=160, data_dir=str(tmp_path / 'tfds')), \
      mock.patch.object(tfds.core.DatasetBuilder, 'is_prepared', return_value=True):
    train.train_and_evaluate(source, str(tmp_path / 'source'))
    splits = sources.load_splits(runs['stl5_transfer'].data, 0)
    _, history = train.train_and_evaluate(runs['stl5_transfer'], str(tmp_path / 'transfer'))
  assert 'Initialised 8 of 10 parameter arrays' in capsys.readouterr().out
  assert splits.class_names == cifar100_lenet_config.STL5
  labels = {splits.train[index]['label'] for index in range(len(splits.train))}
  assert labels <= set(range(5)) and 0 < len(splits.train) < 160
  assert splits.train[0]['image'].shape == (96, 96, 3)
  assert np.isfinite(history[-1]['test_loss']) and history[-1]['step'] == 2


def digits_data(*classes: str) -> ml_collections.ConfigDict:
  data = base_config().data
  data.classes = classes
  return data


def test_class_filter_on_digits_relabels_in_the_given_order():
  full = sources.load(digits_data(), 'train')
  kept = sources.load(digits_data('7', '3'), 'train')
  assert kept.class_names == ('7', '3')
  assert len(kept) == int(np.sum(np.isin(full.labels, (3, 7))))
  for index in range(len(kept)):
    original = full[int(kept.indices[index])]
    assert kept[index]['label'] == {7: 0, 3: 1}[original['label']]
    assert (kept[index]['image'] == original['image']).all()
  data = digits_data('7', '3')
  data.validation_size = 50
  splits = sources.load_splits(data, seed=0)
  assert splits.class_names == splits.evals['val'].class_names == ('7', '3')
  assert len(splits.train) + len(splits.evals['val']) == len(kept)


def test_class_filter_on_image_folders(tmp_path):
  for split, per_class in (('train', 3), ('test', 1)):
    for name in ('ant', 'bee', 'cat'):
      os.makedirs(tmp_path / split / name)
      for index in range(per_class):
        Image.new('RGB', (4, 4), (index, 0, 0)).save(tmp_path / split / name / f'{index}.png')
  data = digits_data('cat', 'ant')
  data.name, data.root = 'image_folder', str(tmp_path)
  splits = sources.load_splits(data, seed=0)
  assert splits.class_names == ('cat', 'ant') and len(splits.train) == 6
  assert [splits.train[i]['label'] for i in range(6)] == [1, 1, 1, 0, 0, 0]
  assert splits.train.name(0) == '0.png' and len(splits.evals['test']) == 2


def test_unknown_class_is_one_line_naming_the_valid_ones():
  with pytest.raises(DataError) as error:
    sources.load(digits_data('3', 'car'), 'train')
  assert str(error.value) == ("config.data.classes has 'car', which is not a class of"
                              " 'digits'; valid class names: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.")


@pytest.mark.parametrize('classes', [('3', '3'), ('3', 4), ('',), 'cat'])
def test_bad_class_lists_are_config_errors(classes):
  config = base_config()
  with config.data.ignore_type():
    config.data.classes = classes
  with pytest.raises(ConfigError, match=r'config\.data\.classes=.* must be distinct class names'):
    validate(config, num_devices=1)


@pytest.fixture(scope='module')
def cifar100_root(tmp_path_factory) -> pathlib.Path:
  """The folder holding cifar-100-python/ (1,117 train and 20 test images, full meta)."""
  return extract('cifar100-partial-exact.tgz', tmp_path_factory) / 'cifar100-partial-exact'


def cifar100_data(root) -> ml_collections.ConfigDict:
  data = base_config().data
  data.name, data.root = 'cifar100_python', str(root)
  return data


def test_cifar100_python_reads_the_original_pickles(cifar100_root, tmp_path_factory):
  train_split = sources.load(cifar100_data(cifar100_root), 'train')
  test = sources.load(cifar100_data(cifar100_root), 'test')
  assert (len(train_split), len(test)) == (1117, 20)
  assert len(train_split.class_names) == 100 and train_split.class_names[:2] == (
      'apple', 'aquarium_fish')
  assert train_split[0]['image'].shape == (32, 32, 3) and train_split[0]['label'] == 19
  samples = extract('foolbox-3.3.4-samples.tgz', tmp_path_factory)
  pngs = sorted(samples.rglob('cifar100_*.png'))
  assert len(pngs) == 20
  for png in pngs:  # cifar100_<test index>_<label>.png, pixel-exact copies
    index, label = map(int, png.stem.split('_')[1:])
    assert test[index]['label'] == label
    assert (np.asarray(Image.open(png).convert('RGB')) == test[index]['image']).all()


def test_cifar100_python_mistakes_are_one_line(cifar100_root, tmp_path):
  with pytest.raises(DataError, match=r"cifar-100-python/train' does not exist; set"):
    sources.load(cifar100_data(tmp_path), 'train')
  with pytest.raises(DataError, match="has splits 'train' and 'test', not 'validation'"):
    sources.load(cifar100_data(cifar100_root), 'validation')
  os.makedirs(tmp_path / 'cifar-100-python')
  (tmp_path / 'cifar-100-python' / 'train').write_bytes(b'not a pickle')
  (tmp_path / 'cifar-100-python' / 'test').write_bytes(pickle.dumps({b'data': []}))
  for split in ('train', 'test'):
    with pytest.raises(DataError, match='is not a CIFAR-100 python pickle') as error:
      sources.load(cifar100_data(tmp_path), split)
    assert '\n' not in str(error.value)


def test_lenet_trains_on_the_real_cifar100_pieces(cifar100_root, tmp_path):
  """The reduced real run's setting: validation carved from the 1,117 training images."""
  config = cifar100_lenet.tuned_runs(cifar100_lenet_config.get_config())['exp1_lenet5']
  config.data.name, config.data.root = 'cifar100_python', str(cifar100_root)
  config.data.validation_size = 117
  config.steps_per_epoch, config.num_epochs = 5, 1
  config.progress_bar = config.write_plots = False
  _, history = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(history[-1]['val_loss']) and np.isfinite(history[-1]['test_loss'])
