"""train_and_evaluate end to end: files, stop rules, resume, TFDS, real CIFAR-10."""

import json
import pathlib
import shutil
from unittest import mock

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import conv4_relu
from tinyimagenet_jax import build, evaluation, train, writers
from tinyimagenet_jax.analysis import curves
from tinyimagenet_jax.data import sources


def test_run_writes_every_promised_file(digits_run, digits_config):
  tmp_path, state, history = digits_run  # train_and_evaluate(digits_config, tmp_path)
  assert [r['epoch'] for r in history] == [1, 2]
  assert int(state.step) == 2 * (1437 // 64)
  assert writers.read_history(str(tmp_path)) == history
  csv_lines = (tmp_path / 'metrics.csv').read_text().splitlines()
  assert len(csv_lines) == 3 and csv_lines[0].startswith('epoch,step,train_loss,train_accuracy')
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert (tmp_path / 'curves.png').read_bytes()[:4] == b'\x89PNG'
  assert (tmp_path / 'schedule.png').read_bytes()[:4] == b'\x89PNG'
  steps = writers.read_steps(str(tmp_path))
  assert [r['step'] for r in steps] == list(range(1, 45))
  assert [r['learning_rate'] for r in steps] == pytest.approx([0.05] * 44)
  assert [r['momentum'] for r in steps] == pytest.approx([0.9] * 44)
  np.testing.assert_allclose(np.mean([r['loss'] for r in steps[22:]]), history[1]['train_loss'])
  assert json.loads((tmp_path / 'config.json').read_text()) == json.loads(
      json.dumps(digits_config.to_dict()))
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved == [22, 44]  # the newest max_checkpoints_to_keep=2
  for record in history:
    assert record['train_error'] == 1 - record['train_accuracy']
    assert 0 <= record['test_top1'] <= record['test_top5'] <= 1


def tensorboard_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from a run's TensorBoard event files, read as TFRecords."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted((pathlib.Path(workdir) / 'tensorboard').glob('events.out.tfevents.*')):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], 'little')
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_tensorboard_groups_tags_by_split_on_the_global_step(digits_run):
  workdir, _, history = digits_run
  scalars = tensorboard_scalars(workdir)
  steps_per_epoch = 1437 // 64
  for tag in ('train/loss', 'train/accuracy', 'train/grad_norm', 'optimizer/learning_rate'):
    assert [step for step, _ in scalars[tag]] == list(range(1, 2 * steps_per_epoch + 1)), tag
  for tag, key in (('test/loss', 'test_loss'), ('test/top1', 'test_top1'),
                   ('train/epoch_loss', 'train_loss'), ('speed/epoch_seconds', 'seconds')):
    assert scalars[tag] == [(record['step'], pytest.approx(record[key], rel=1e-6))
                            for record in history], tag
  assert not [tag for tag in scalars if '/' not in tag or tag.startswith('step/')]


def test_evaluate_counts_each_test_example_once(digits_run, digits_config):
  tmp_path, state, _ = digits_run
  digits_config.eval_batch_size = 96  # 360 = 3 * 96 + 72: the last batch is padded
  run = build.build(digits_config, 'evaluate')
  scores = evaluation.evaluate(run, state, 'test', keep_probabilities=True)
  assert scores.metrics['count'] == 360 and scores.probabilities.shape == (360, 10)
  history = writers.read_history(str(tmp_path))
  for key in ('loss', 'top1', 'top5'):
    np.testing.assert_allclose(scores.metrics[key], history[-1][f'test_{key}'], rtol=1e-6)
  np.testing.assert_allclose(
      np.mean(scores.probabilities.argmax(-1) == scores.labels), history[-1]['test_top1'])


def test_evaluate_mode_reads_only_the_split_it_scores(digits_run, digits_config, tmp_path):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)  # it writes its results there
  digits_config.mode = 'evaluate'
  loaded = []
  real_digits = sources.SOURCES['digits']
  with mock.patch.dict(sources.SOURCES, digits=lambda data, split: (
      loaded.append(split), real_digits(data, split))[1]):
    result = evaluation.evaluate_saved(digits_config, str(tmp_path))
  assert loaded == ['test']
  history = writers.read_history(str(tmp_path))
  assert result['loss'] == pytest.approx(history[-1]['test_loss'], rel=1e-6)
  assert result['count'] == 360


def test_rerun_resumes_and_matches_an_uninterrupted_run(digits_run, digits_config, tmp_path):
  digits_config.num_epochs = 3
  whole_state, whole = train.train_and_evaluate(digits_config, str(tmp_path / 'whole'))
  shutil.copytree(digits_run[0], tmp_path / 'split')  # digits_config for its 2 epochs
  with open(tmp_path / 'split' / 'metrics.jsonl', 'a') as file:  # an epoch never checkpointed
    file.write(json.dumps({'epoch': 3, 'train_loss': -1.0}) + '\n')
  with open(tmp_path / 'split' / 'steps.jsonl', 'a') as file:
    file.write(json.dumps({'step': 45, 'loss': -1.0}) + '\n')
  digits_config.num_epochs = 3
  split_state, split = train.train_and_evaluate(digits_config, str(tmp_path / 'split'))
  assert len(split) == 3
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(split_state.params),
               jax.device_get(whole_state.params))
  for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1'):
    assert [r[key] for r in split] == [r[key] for r in whole], key
  assert writers.read_history(str(tmp_path / 'split')) == split
  steps = writers.read_steps(str(tmp_path / 'split'))
  assert [r['step'] for r in steps] == list(range(1, 3 * 22 + 1))
  assert [r['loss'] for r in steps] == [r['loss'] for r in writers.read_steps(str(tmp_path / 'whole'))]


def test_target_train_error_stops_the_run_and_stays_stopped(digits_config, tmp_path):
  digits_config.num_epochs = 20
  digits_config.target_train_error = 0.5
  _, history = train.train_and_evaluate(digits_config, str(tmp_path))
  errors = [r['train_error'] for r in history]
  assert len(history) < 20 and errors[-1] <= 0.5 and all(e > 0.5 for e in errors[:-1])
  _, again = train.train_and_evaluate(digits_config, str(tmp_path))
  assert again == history


def test_tfds_dataset_trains_under_mock_data(digits_config, tmp_path):
  digits_config.data.name = 'cifar10'
  digits_config.model.name = 'mlp'
  del digits_config.model['filters']
  del digits_config.model['hidden']
  digits_config.num_epochs = 1
  with tfds.testing.mock_data(num_examples=192), mock.patch.object(
      tfds.core.DatasetBuilder, 'is_prepared', return_value=True):
    _, history = train.train_and_evaluate(digits_config, str(tmp_path))
  assert history[0]['step'] == 3
  assert np.isfinite(history[0]['test_loss'])


TEST_IMAGES_PER_CLASS = 200  # of the 1,000 per class: the two evaluations cost 4,000 decodes


def with_fewer_test_images(folder: pathlib.Path, root: pathlib.Path, per_class: int) -> pathlib.Path:
  """`root` holding `folder`'s whole train split and the first `per_class` test images
  of each class (sorted names), all as symbolic links to the real files."""
  root.mkdir()
  (root / 'train').symlink_to(folder / 'train', target_is_directory=True)
  for class_dir in sorted(p for p in (folder / 'test').iterdir() if p.is_dir()):
    (root / 'test' / class_dir.name).mkdir(parents=True)
    for image in sorted(class_dir.iterdir())[:per_class]:
      (root / 'test' / class_dir.name / image.name).symlink_to(image)
  return root


def test_conv4_relu_learns_on_real_cifar10(cifar10_folder, tmp_path):
  """200 steps of the report's model on the real JPEGs through the host pipeline, tested on
  2,000 of the real test images (200 per class; a standard error near 0.01 on top-1).

  The report's learning rate is 0.2 for batches of 128; these batches are 32, so 0.05, the
  same rate per example. Measured here (2 CPU cores; 29 s alone), training accuracy over
  the second 100-step epoch and test top-1 after it: 0.241 and 0.309 with the config's
  seed 0 (this test); over seeds 0-6, standing in for other machines' float rounding, at
  least 0.233 and 0.208 (chance: 0.10; 0.15 is 7 standard errors above it). Batches of 64
  at 0.1 took twice as long (59 s) for 0.250 and 0.361 at seed 0, at least 0.244 and 0.220
  over the seeds; 300 steps at 0.2 made the last iterate swing (0.227 at seed 2).
  """
  config = conv4_relu.get_config()
  config.data.name = 'image_folder'
  config.data.root = str(with_fewer_test_images(cifar10_folder, tmp_path / 'data',
                                                TEST_IMAGES_PER_CLASS))
  test = sources.image_folder(config.data.root, 'test')
  assert len(test) == 10 * TEST_IMAGES_PER_CLASS and len(set(test.labels.tolist())) == 10
  config.batch_size = 32
  config.optimizer.learning_rate = 0.05
  config.steps_per_epoch = 100
  config.num_epochs = 2
  config.progress_bar = False
  config.data.placement = 'host'  # the grain pipeline on real JPEGs (the device path decodes all)
  _, history = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert len(history) == 2
  assert history[-1]['train_accuracy'] > 0.2
  assert history[-1]['test_top1'] > 0.15
  assert pathlib.Path(tmp_path, 'run', 'curves.png').exists()


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_cutmix_run_trains(digits_config, tmp_path, placement):
  digits_config.num_epochs = 3
  digits_config.augment.cutmix_alpha = 1.0
  digits_config.data.placement = placement
  _, history = train.train_and_evaluate(digits_config, str(tmp_path))
  losses = [record['train_loss'] for record in history]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def digits_folder(root: pathlib.Path, splits: dict[str, int]) -> None:
  """root/<split>/<digit>/<n>.png: the first `count` digits of the bundled set per split."""
  pixels, labels = sources.digits_table()
  start = 0
  for split, count in splits.items():
    for index in range(start, start + count):
      folder = root / split / str(labels[index])
      folder.mkdir(parents=True, exist_ok=True)
      image = np.round(pixels[index] * 255 / 16).astype(np.uint8)
      Image.fromarray(np.repeat(image[..., None], 3, axis=-1)).save(folder / f'{index}.png')
    start += count


def test_scores_are_named_by_the_split_they_were_computed_on(digits_config, tmp_path, capsys):
  digits_folder(tmp_path / 'data', {'train': 320, 'validation': 100})
  digits_config.data.name, digits_config.data.root = 'image_folder', str(tmp_path / 'data')
  digits_config.data.eval_split, digits_config.num_epochs = 'validation', 1
  digits_config.steps_per_epoch, digits_config.batch_size = 3, 32
  workdir = tmp_path / 'run'
  _, history = train.train_and_evaluate(digits_config, str(workdir))
  keys = set(history[0])
  assert {'validation_loss', 'validation_top1', 'validation_top5'} <= keys
  assert not [key for key in keys if 'test' in key]
  assert 'test' not in (workdir / 'metrics.csv').read_text().splitlines()[0]
  line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('epoch 1:'))
  assert '| validation loss ' in line and 'test' not in line
  assert not [tag for tag in tensorboard_scalars(workdir) if 'test' in tag]
  assert [label for _, series in curves.history_panels(history[0]) for _, label in series] == [
      'train', 'validation', 'train', 'validation', 'train']
