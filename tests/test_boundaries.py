"""Every mistake a user can make, told as one line `error: <what>; <fix>` with status 2.

Most rows run `launch.run(config, workdir)` in-process (they fail before
compiling, or after a tiny compile); the rows that need real flag parsing run
launch.py in a fresh interpreter. `{tmp}` in a row stands for its tmp_path.
"""

import io
import pathlib

import numpy as np
from PIL import Image
import pytest

import launch
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data.tiny_imagenet import archive
from tinyimagenet_jax.models import MODELS

from helpers import run_launch

UNREADABLE = ('remove or replace it, or set --config.data.skip_corrupt=True to skip'
              ' unreadable images.')
HELP = 'see the flags with python launch.py --helpfull'


def jpeg_bytes(seed: int) -> bytes:
  """An 8x8 RGB JPEG of seeded noise."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'JPEG')
  return buffer.getvalue()


def image_folder(tmp: pathlib.Path) -> pathlib.Path:
  """<tmp>/images/{train,test}/{cat,dog}/<i>.jpg: 7 train and 2 test images per class."""
  for split, count in (('train', 7), ('test', 2)):
    for label in ('cat', 'dog'):
      folder = tmp / 'images' / split / label
      folder.mkdir(parents=True)
      for index in range(count):
        (folder / f'{index}.jpg').write_bytes(jpeg_bytes(100 * len(label) + index))
  return tmp / 'images'


def corrupt_jpeg(tmp: pathlib.Path) -> None:
  """The image folder, plus a text file named like a JPEG among the dog images."""
  image_folder(tmp)
  (tmp / 'images' / 'train' / 'dog' / 'x.jpg').write_bytes(b'not an image\n' * 8)


def truncated_jpeg(tmp: pathlib.Path) -> None:
  """The image folder, plus a JPEG cut short in its scan data among the dog images.

  Its header is whole, so PIL's verify() passes it: only decoding finds the cut.
  """
  image_folder(tmp)
  (tmp / 'images' / 'train' / 'dog' / 'x.jpg').write_bytes(jpeg_bytes(7)[:-40])


def corrupt_test_jpeg(tmp: pathlib.Path) -> None:
  """The image folder, plus a text file named like a JPEG among the test images."""
  image_folder(tmp)
  (tmp / 'images' / 'test' / 'cat' / 'x.jpg').write_bytes(b'not an image\n' * 8)


def empty_class(tmp: pathlib.Path) -> None:
  """A train class folder holding only a text file, and an empty test folder."""
  (tmp / 'images' / 'train' / 'cat').mkdir(parents=True)
  (tmp / 'images' / 'train' / 'cat' / 'notes.txt').write_text('no images here')
  (tmp / 'images' / 'test').mkdir()


def text_named_zip(tmp: pathlib.Path) -> None:
  """A manual_dir whose tiny-imagenet-200.zip is a text file."""
  (tmp / 'manual').mkdir()
  (tmp / 'manual' / 'tiny-imagenet-200.zip').write_text('not a zip archive\n')


# With one bad image, 15 train images: 3 whole batches read every one in the first epoch.
IMAGES = {'data.name': 'image_folder', 'data.root': '{tmp}/images', 'batch_size': 5,
          'eval_batch_size': 4}
TINY = {'data.name': 'tiny_imagenet', 'data.data_dir': '{tmp}/tfds',
        'data.subset_classes': 3, 'data.subset_split': (10, 1, 1), 'data.eval_split': 'test'}

# (id, setup(tmp) or None, config overrides on the digits config, expected message)
IN_PROCESS = [
    ('unknown model', None, {'model.name': 'conv5'},
     "config.model.name='conv5' is not a valid choice; choose one of: "
     + ', '.join(sorted(MODELS))),
    ('negative learning rate', None, {'optimizer.learning_rate': -0.1},
     'config.optimizer.learning_rate=-0.1 must be a positive number.'),
    ('label smoothing of 1', None, {'label_smoothing': 1.0},
     'config.label_smoothing=1.0 must be in [0, 1).'),
    ('mean without std', None, {'data.mean': (0.5,)},
     'config.data.mean=(0.5,) and config.data.std=() must have one value per channel each.'),
    ('crop larger than the images', None, {'data.crop_size': 16},
     'a 8x8 image is smaller than config.data.crop_size=16; set config.data.resize_shorter'
     ' >= 16 or a smaller crop.'),
    ('batch larger than the training set', None, {'batch_size': 2048},
     'config.batch_size=2048 is larger than the 1437 training examples; use a smaller batch.'),
    ('validation split that leaves nothing', None, {'data.validation_size': 1437.0},
     'config.data.validation_size=1437.0 leaves no training examples out of 1437; use a'
     ' smaller count or fraction.'),
    ('missing image folder root', None, {**IMAGES, 'data.root': '{tmp}/nowhere'},
     "image folder '{tmp}/nowhere/test' does not exist; set --config.data.root to a folder"
     ' holding <split>/<class>/*.jpg.'),
    ('image folder without images', empty_class, IMAGES,
     "image folder '{tmp}/images/test' holds no .jpg/.jpeg/.png files in class subfolders;"
     ' expected <split>/<class>/<image>.'),
    ('corrupt JPEG', corrupt_jpeg, IMAGES,
     "'{tmp}/images/train/dog/x.jpg' is not a readable image (cannot identify image file); "
     + UNREADABLE),
    ('corrupt JPEG read by a worker process', corrupt_jpeg, {**IMAGES, 'data.num_workers': 1},
     "'{tmp}/images/train/dog/x.jpg' is not a readable image (cannot identify image file); "
     + UNREADABLE),
    ('corrupt JPEG in the eval split', corrupt_test_jpeg, IMAGES,
     "'{tmp}/images/test/cat/x.jpg' is not a readable image (cannot identify image file); "
     + UNREADABLE),
    ('truncated JPEG', truncated_jpeg, IMAGES,
     "'{tmp}/images/train/dog/x.jpg' is not a readable image (image file is truncated"
     ' (16 bytes not processed)); ' + UNREADABLE),
    ('TFDS dataset offline with download off', None,
     {'data.name': 'mnist', 'data.data_dir': '{tmp}/tfds', 'data.download': False},
     "TFDS dataset 'mnist' is not prepared in data_dir='{tmp}/tfds' and config.data.download"
     ' is False; prepare it once online or point --config.data.data_dir at a prepared copy.'),
    ('missing Tiny ImageNet manual_dir', None, {**TINY, 'data.manual_dir': '{tmp}/nowhere'},
     "config.data.manual_dir='{tmp}/nowhere' is not a folder; create it and put the archives"
     " of 'tiny_imagenet/subset3_10_1_1_seed0' in it, or leave it empty to download them."),
    ('text file named tiny-imagenet-200.zip', text_named_zip,
     {**TINY, 'data.manual_dir': '{tmp}/manual'},
     "'{tmp}/manual/tiny-imagenet-200.zip' is not a readable zip archive (File is not a zip"
     f' file); download it again from {archive.URL}.'),
    ('full Tiny ImageNet test split', None, {**TINY, 'data.subset_classes': 0},
     "the full Tiny ImageNet 'test' split is unlabelled; evaluate on 'validation'"
     ' (--config.data.eval_split=validation) or use a subset (--config.data.subset_classes=100).'),
    ('impossible Tiny ImageNet subset', None, {**TINY, 'data.subset_classes': 300},
     'a Tiny ImageNet subset of 300 classes, (10, 1, 1) train/validation/test images per'
     ' class and seed 0 is impossible; use 1 to 200 classes, at least 1 train image, at most'
     ' 500 images per class in all, and a seed >= 0.'),
]


def configured(config, overrides: dict, tmp: pathlib.Path):
  """`config` with each dotted key set; '{tmp}' in string values becomes `tmp`."""
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    (config[section] if section else config)[field] = (
        value.format(tmp=tmp) if isinstance(value, str) else value)
  return config


@pytest.mark.parametrize('setup, overrides, message', [row[1:] for row in IN_PROCESS],
                         ids=[row[0] for row in IN_PROCESS])
def test_mistake_is_one_line_and_status_2(setup, overrides, message, digits_config,
                                          tmp_path, capsys):
  if setup:
    setup(tmp_path)
  config = configured(digits_config, overrides, tmp_path)
  assert launch.run(config, str(tmp_path / 'run')) == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  assert err.splitlines()[-1] == 'error: ' + message.format(tmp=tmp_path)


@pytest.mark.parametrize('setup', [corrupt_jpeg, truncated_jpeg])
def test_skip_corrupt_drops_logs_and_lists_unreadable_images(setup, tmp_path, caplog):
  setup(tmp_path)
  bad = str(tmp_path / 'images' / 'train' / 'dog' / 'x.jpg')
  source = sources.image_folder(str(tmp_path / 'images'), 'train', skip_corrupt=True)
  assert source.skipped == (bad,) and len(source) == 14 and bad not in source.paths
  assert any(bad in r.getMessage() for r in caplog.records)
  assert any('Skipped 1 unreadable image(s) of 15' in r.getMessage() for r in caplog.records)


def test_skip_corrupt_run_completes_and_reports_what_it_skipped(digits_config, tmp_path, capsys,
                                                                caplog):
  corrupt_jpeg(tmp_path)
  truncated = tmp_path / 'images' / 'train' / 'cat' / 'y.jpg'
  truncated.write_bytes(jpeg_bytes(8)[:-40])
  config = configured(digits_config, {**IMAGES, 'data.skip_corrupt': True, 'num_epochs': 1},
                      tmp_path)
  assert launch.run(config, str(tmp_path / 'run')) == 0
  assert 'Finished after 1 epochs' in capsys.readouterr().out
  warnings = [r.getMessage() for r in caplog.records]
  assert f"Skipped 2 unreadable image(s) of 16 in {tmp_path / 'images' / 'train'}." in warnings
  assert sum(str(truncated) in w or '/dog/x.jpg' in w for w in warnings) == 2


# (extra command-line arguments after --config=configs/quickstart.py, expected message)
FLAG_ROWS = [
    (['--config.optimizer.learnig_rate=0.1'],
     '--config.optimizer.learnig_rate names no config field (Did you mean "learning_rate"'
     ' instead of "learnig_rate"?); fix the name (the config file and'
     ' tinyimagenet_jax/config.py list the fields).'),
    (['--config.optimzer.learning_rate=0.1'],
     '--config.optimzer.learning_rate names no config field (Did you mean "optimizer"'
     ' instead of "optimzer"?); fix the name (the config file and tinyimagenet_jax/config.py'
     ' list the fields).'),
    (['--config.optimizer.warmup=1'],
     '--config.optimizer.warmup names no config field; fix the name (the config file and'
     ' tinyimagenet_jax/config.py list the fields).'),
    (['--config.batch_size=abc'],
     "--config.batch_size=abc is not an int (invalid literal for int() with base 10: 'abc');"
     ' pass an int, e.g. the value in the config file: --config.batch_size=64.'),
    (['--config.optimizer.learning_rate=fast'],
     "--config.optimizer.learning_rate=fast is not a float (could not convert string to float:"
     " 'fast'); pass a float, e.g. the value in the config file:"
     ' --config.optimizer.learning_rate=0.05.'),
    (['--workdri=/tmp/x'], f'unknown flag --workdri (did you mean --workdir?); {HELP}.'),
    (['extra'], "unexpected arguments 'extra'; pass everything as --name=value flags"
     f' ({HELP}).'),
]


@pytest.mark.parametrize('args, message', FLAG_ROWS, ids=[row[0][0] for row in FLAG_ROWS])
def test_command_line_mistake_is_one_line_and_status_2(args, message, tmp_path):
  result = run_launch('--config=configs/quickstart.py', *args, f'--workdir={tmp_path}/run',
                      timeout=120)
  assert (result.returncode, result.stderr) == (2, f'error: {message}\n')
  assert not (tmp_path / 'run').exists()


# (id, the config file's text or None for no file, extra arguments, expected message)
CONFIG_FILES = [
    ('missing', None, [], "config file '{tmp}/config.py' does not exist; pass an experiment"
     ' file, e.g. --config=configs/quickstart.py.'),
    ('missing, with an override', None, ['--config.num_epochs=1'],
     "config file '{tmp}/config.py' does not exist; pass an experiment file, e.g."
     ' --config=configs/quickstart.py.'),
    ('syntax error', 'def get_config(:\n', [],
     "config file '{tmp}/config.py' failed to load (SyntaxError: invalid syntax (config.py,"
     ' line 1)); fix the file.'),
    ('get_config raises', 'def get_config():\n  raise RuntimeError("no GPU here")\n',
     ['--config.num_epochs=1'],
     "config file '{tmp}/config.py' failed to load (RuntimeError: no GPU here); fix the file."),
    ('get_config returns nothing', 'def get_config():\n  return None\n', [],
     "config file '{tmp}/config.py' gives no config; its get_config() must return a"
     ' ConfigDict, as in configs/quickstart.py.'),
]


@pytest.mark.parametrize('text, args, message', [row[1:] for row in CONFIG_FILES],
                         ids=[row[0] for row in CONFIG_FILES])
def test_bad_config_file_is_one_line_and_status_2(text, args, message, tmp_path):
  path = tmp_path / 'config.py'
  if text is not None:
    path.write_text(text)
  result = run_launch(f'--config={path}', *args, f'--workdir={tmp_path}/run', timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  # ml_collections itself warns first about a get_config() that returns None.
  assert result.stderr.splitlines()[-1] == f'error: {message.format(tmp=tmp_path)}'


def test_missing_config_flag_is_one_line_and_status_2():
  result = run_launch(timeout=120)
  assert (result.returncode, result.stderr) == (
      2, 'error: --config is required; pass an experiment file, e.g.'
      ' --config=configs/quickstart.py.\n')


def test_help_still_works():
  result = run_launch('--help', timeout=120)
  assert result.returncode == 1 and not result.stderr  # absl's usage exit
  assert result.stdout.startswith('Command-line entry point: python launch.py')
  assert '--config: Experiment config file' in result.stdout


def test_unreadable_image_in_the_first_epoch_stops_the_command_with_one_line(tmp_path):
  corrupt_jpeg(tmp_path)
  result = run_launch(
      '--config=configs/quickstart.py', '--config.data.name=image_folder',
      f'--config.data.root={tmp_path}/images', '--config.batch_size=5',
      '--config.eval_batch_size=4', f'--workdir={tmp_path}/run', timeout=300)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.splitlines()[-1] == (
      f"error: '{tmp_path}/images/train/dog/x.jpg' is not a readable image (cannot identify"
      f' image file); {UNREADABLE}')
