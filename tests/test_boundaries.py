"""Every mistake a user can make, told as one line `error: <what>; <fix>` with status 2.

Each row names what its message must mention (the setting, its value, the file),
not the whole sentence, so rewording a message (ours or a library's) breaks no row.
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
from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import config_help
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data.tiny_imagenet import archive

from helpers import run_launch

SKIP = 'config.data.skip_corrupt=True'  # the fix every unreadable-image message names


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

# (id, setup(tmp) or None, config overrides on the digits config, what the message names)
IN_PROCESS = [
    ('unknown model', None, {'model.name': 'conv5'}, ('config.model.name', 'conv5')),
    ('negative learning rate', None, {'optimizer.learning_rate': -0.1},
     ('config.optimizer.learning_rate', '-0.1')),
    ('label smoothing of 1', None, {'label_smoothing': 1.0}, ('config.label_smoothing', '1.0')),
    ('mean without std', None, {'data.mean': (0.5,)}, ('config.data.mean', 'config.data.std')),
    ('crop larger than the images', None, {'data.crop_size': 16},
     ('config.data.crop_size=16', '8x8')),
    ('batch larger than the training set', None, {'batch_size': 2048},
     ('config.batch_size=2048', '1437')),
    ('validation split that leaves nothing', None, {'data.validation_size': 1437.0},
     ('config.data.validation_size=1437.0', '1437')),
    ('missing image folder root', None, {**IMAGES, 'data.root': '{tmp}/nowhere'},
     ("config.data.root='{tmp}/nowhere'", 'is not a folder')),
    ('image folder without images', empty_class, IMAGES, ('{tmp}/images/test',)),
    ('corrupt JPEG', corrupt_jpeg, IMAGES, ('{tmp}/images/train/dog/x.jpg', SKIP)),
    ('corrupt JPEG read by a worker process', corrupt_jpeg, {**IMAGES, 'data.num_workers': 1},
     ('{tmp}/images/train/dog/x.jpg', SKIP)),
    ('corrupt JPEG in the eval split', corrupt_test_jpeg, IMAGES,
     ('{tmp}/images/test/cat/x.jpg', SKIP)),
    ('truncated JPEG', truncated_jpeg, IMAGES, ('{tmp}/images/train/dog/x.jpg', SKIP)),
    ('TFDS dataset offline with download off', None,
     {'data.name': 'mnist', 'data.data_dir': '{tmp}/tfds', 'data.download': False},
     ("'mnist'", '{tmp}/tfds', 'config.data.download')),
    ('missing Tiny ImageNet manual_dir', None, {**TINY, 'data.manual_dir': '{tmp}/nowhere'},
     ("config.data.manual_dir='{tmp}/nowhere'",)),
    ('text file named tiny-imagenet-200.zip', text_named_zip,
     {**TINY, 'data.manual_dir': '{tmp}/manual'},
     ('{tmp}/manual/tiny-imagenet-200.zip', archive.URL)),
    ('full Tiny ImageNet test split', None, {**TINY, 'data.subset_classes': 0},
     ("'test'", 'config.data.eval_split=validation')),
    ('impossible Tiny ImageNet subset', None, {**TINY, 'data.subset_classes': 300},
     ('300 classes', '(10, 1, 1)')),
]


def assert_error_line(line: str, names, tmp) -> None:
  """`line` is an `error: ` line that mentions each of `names` ('{tmp}' stands for tmp)."""
  assert line.startswith('error: '), line
  for name in names:
    assert name.format(tmp=tmp) in line, (name, line)


def configured(config, overrides: dict, tmp: pathlib.Path):
  """`config` with each dotted key set; '{tmp}' in string values becomes `tmp`."""
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    (config[section] if section else config)[field] = (
        value.format(tmp=tmp) if isinstance(value, str) else value)
  return config


@pytest.mark.parametrize('setup, overrides, names', [row[1:] for row in IN_PROCESS],
                         ids=[row[0] for row in IN_PROCESS])
def test_mistake_is_one_line_and_status_2(setup, overrides, names, digits_config,
                                          tmp_path, capsys):
  if setup:
    setup(tmp_path)
  config = configured(digits_config, overrides, tmp_path)
  assert launch.run(config, str(tmp_path / 'run')) == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  assert_error_line(err.splitlines()[-1], names, tmp_path)


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


# (extra command-line arguments after --config=configs/quickstart.py, what the message names)
FLAG_ROWS = [
    (['--config.optimizer.learnig_rate=0.1'], ('learnig_rate',)),
    (['--config.optimzer.learning_rate=0.1'], ('optimzer',)),
    (['--config.optimizer.warmup=1'], ('warmup',)),
    (['--config.batch_size=abc'], ('config.batch_size', 'abc')),
    (['--config.optimizer.learning_rate=fast'], ('config.optimizer.learning_rate', 'fast')),
    (['--workdri=/tmp/x'], ('workdri',)),
    (['extra'], ("'extra'",)),
]


@pytest.mark.parametrize('args, names', FLAG_ROWS, ids=[row[0][0] for row in FLAG_ROWS])
def test_command_line_mistake_is_one_line_and_status_2(args, names, tmp_path):
  result = run_launch('--config=configs/quickstart.py', *args, f'--workdir={tmp_path}/run',
                      timeout=120)
  assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
  assert_error_line(result.stderr.rstrip('\n'), names, tmp_path)
  assert not (tmp_path / 'run').exists()


# (id, the config file's text or None for no file, extra arguments, what the message names)
CONFIG_FILES = [
    ('missing', None, [], ('{tmp}/config.py', 'does not exist')),
    ('missing, with an override', None, ['--config.num_epochs=1'],
     ('{tmp}/config.py', 'does not exist')),
    ('syntax error', 'def get_config(:\n', [], ('SyntaxError', 'config.py')),
    ('get_config raises', 'def get_config():\n  raise RuntimeError("no GPU here")\n',
     ['--config.num_epochs=1'], ('RuntimeError', 'no GPU here')),
    ('get_config returns nothing', 'def get_config():\n  return None\n', [],
     ('{tmp}/config.py', 'get_config()')),
]


@pytest.mark.parametrize('text, args, names', [row[1:] for row in CONFIG_FILES],
                         ids=[row[0] for row in CONFIG_FILES])
def test_bad_config_file_is_one_line_and_status_2(text, args, names, tmp_path):
  path = tmp_path / 'config.py'
  if text is not None:
    path.write_text(text)
  result = run_launch(f'--config={path}', *args, f'--workdir={tmp_path}/run', timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  # ml_collections itself warns first about a get_config() that returns None.
  assert_error_line(result.stderr.splitlines()[-1], names, tmp_path)


def test_missing_config_flag_is_one_line_and_status_2():
  result = run_launch(timeout=120)
  assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
  assert_error_line(result.stderr.rstrip('\n'), ('--config',), '')


@pytest.mark.parametrize('flag', ['--help', '--helpfull', '-h'])
def test_help_lists_the_configs_and_every_field_with_its_default_and_comment(flag):
  result = run_launch(flag, timeout=120)
  assert result.returncode == 0 and not result.stderr, result.stderr
  text = result.stdout
  assert text.startswith('usage: python launch.py --config=<config file>')
  assert '  configs/tiny_ensembles.py: ' in text and '  configs/quickstart.py: Quickstart:' in text
  assert '  --config: Experiment config file' in text and '  --distributed: ' in text
  fields = [line for line in text.splitlines() if line.startswith('  --config.')]
  assert len(fields) == len(config_help.flat_items(config_lib.base_config()))
  assert any(line.startswith("  --config.data.placement='auto'") for line in fields)
  assert any(line.startswith('  --config.batch_size=128') and 'global batch' in line
             for line in fields)
  num_workers = next(line for line in fields if line.startswith('  --config.data.num_workers='))
  assert num_workers.endswith('grain worker processes (0: decode in threads)')


def test_help_with_a_config_shows_its_values():
  result = run_launch('--config=configs/quickstart.py', '--config.num_epochs=3', '--help',
                      timeout=120)
  assert result.returncode == 0 and not result.stderr, result.stderr
  assert 'Config fields of configs/quickstart.py' in result.stdout
  assert '  --config.num_epochs=3 ' in result.stdout
  assert "  --config.data.name='digits' " in result.stdout


def test_unreadable_image_in_the_first_epoch_stops_the_command_with_one_line(tmp_path):
  corrupt_jpeg(tmp_path)
  result = run_launch(
      '--config=configs/quickstart.py', '--config.data.name=image_folder',
      f'--config.data.root={tmp_path}/images', '--config.batch_size=5',
      '--config.eval_batch_size=4', f'--workdir={tmp_path}/run', timeout=300)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert_error_line(result.stderr.splitlines()[-1], ('{tmp}/images/train/dog/x.jpg', SKIP),
                    tmp_path)
