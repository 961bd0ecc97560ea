"""Every bad config value stops before compiling, with one line naming the fix."""

import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import validation
from tinyimagenet_jax.data.sources import SOURCES
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import MODELS
from tinyimagenet_jax.optim import OPTIMIZERS, SCHEDULES

from helpers import run_launch

def choices(registry) -> str:
  return ', '.join(sorted(registry))


BAD_VALUES = [
    ('data.name', 'cifar11',
     f"config.data.name='cifar11' is not a valid choice; choose one of: {choices(SOURCES)}"),
    ('model.name', 'conv5',
     f"config.model.name='conv5' is not a valid choice; choose one of: {choices(MODELS)}"),
    ('optimizer.name', 'adamw2',
     "config.optimizer.name='adamw2' is not a valid choice; choose one of:"
     f' {choices(OPTIMIZERS)}'),
    ('optimizer.schedule', 'cosine2',
     "config.optimizer.schedule='cosine2' is not a valid choice; choose one of:"
     f' {choices(SCHEDULES)}'),
    ('compute_dtype', 'float16',
     "config.compute_dtype='float16' is not a valid choice; choose one of: bfloat16, float32"),
    ('label_smoothing', 1.0, 'config.label_smoothing=1.0 must be in [0, 1).'),
    ('optimizer.clip_global_norm', -1.0,
     'config.optimizer.clip_global_norm=-1.0 must be >= 0 (0 turns it off).'),
    ('optimizer.l2', -0.001, 'config.optimizer.l2=-0.001 must be >= 0 (0 turns it off).'),
    ('optimizer.learning_rate', 0.0,
     'config.optimizer.learning_rate=0.0 must be a positive number.'),
    ('optimizer.learning_rate', -0.1,
     'config.optimizer.learning_rate=-0.1 must be a positive number.'),
    ('batch_size', 0, 'config.batch_size=0 must be a positive number.'),
    ('batch_size', -8, 'config.batch_size=-8 must be a positive number.'),
    ('eval_batch_size', 0, 'config.eval_batch_size=0 must be a positive number.'),
    ('num_epochs', 0, 'config.num_epochs=0 must be a positive number.'),
    ('target_train_error', 1.5,
     'config.target_train_error=1.5 must be in (0, 1), e.g. 0.25 to stop at 25% training error.'),
    ('target_train_error', 0.0,
     'config.target_train_error=0.0 must be in (0, 1), e.g. 0.25 to stop at 25% training error.'),
    ('steps_per_epoch', -1,
     'config.steps_per_epoch=-1 must be a whole number of steps, or 0 for one full pass over'
     ' the training split.'),
    ('checkpoint_every_steps', -5,
     'config.checkpoint_every_steps=-5 must be a whole number of steps, or 0 for epoch ends'
     ' only.'),
    ('checkpoint_min_seconds', -1,
     'config.checkpoint_min_seconds=-1 must be a whole number of seconds, or 0 to save every'
     ' epoch end.'),
    ('data.validation_size', -0.1,
     'config.data.validation_size=-0.1 must be a count (>= 1), a fraction in (0, 1), or 0 for'
     ' none.'),
    ('augment.flip_prob', 2.0,
     'config.augment.flip_prob=2.0 must be a probability in [0, 1].'),
    ('data.resize_shorter', -1,
     'config.data.resize_shorter=-1 must be a whole number of pixels, or 0 for off.'),
    ('data.crop_size', -4,
     'config.data.crop_size=-4 must be a whole number of pixels, or 0 for off.'),
    ('augment.translate', 1.0,
     'config.augment.translate=1.0 must be a fraction of the image size in [0, 1), e.g. 0.1,'
     ' or 0 for off.'),
    ('augment.rotate_degrees', -5.0,
     'config.augment.rotate_degrees=-5.0 must be a number of degrees >= 0, e.g. 15, or 0 for'
     ' off.'),
    ('augment.contrast', (1.3, 0.7),
     'config.augment.contrast=(1.3, 0.7) must be 2 positive numbers (lo, hi) with lo <= hi,'
     ' e.g. (0.7, 1.3), or () for off.'),
    ('augment.contrast', (0.7,),
     'config.augment.contrast=(0.7,) must be 2 positive numbers (lo, hi) with lo <= hi,'
     ' e.g. (0.7, 1.3), or () for off.'),
    ('augment.color_jitter', (0.1, -0.1, 0.1),
     'config.augment.color_jitter=(0.1, -0.1, 0.1) must be 3 numbers >= 0 (brightness,'
     ' contrast, saturation), e.g. (0.1, 0.1, 0.1), or () for off.'),
    ('augment.sharpness', (2.0, 1.5),
     'config.augment.sharpness=(2.0, 1.5) must be (factor, prob) with factor >= 0 and prob in'
     ' [0, 1], e.g. (2.0, 0.1), or () for off.'),
    ('augment.mixup_alpha', -0.2,
     'config.augment.mixup_alpha=-0.2 must be a Beta(alpha, alpha) parameter >= 0, e.g. 0.2,'
     ' or 0 for off.'),
    ('augment.cutmix_alpha', -1.0,
     'config.augment.cutmix_alpha=-1.0 must be a Beta(alpha, alpha) parameter >= 0, e.g. 0.2,'
     ' or 0 for off.'),
    ('early_stopping.rule', 'never',
     "config.early_stopping.rule='never' is not a valid choice; choose one of: , patience,"
     ' rising'),
    ('members.count', 0, 'config.members.count=0 must be a whole number of models >= 1.'),
    ('mode', 'fit',
     "config.mode='fit' is not a valid choice; choose one of: evaluate, predict, train"),
]


def with_value(key: str, value):
  config = config_lib.base_config()
  section, _, field = key.rpartition('.')
  (config[section] if section else config)[field] = value
  return config


@pytest.mark.parametrize('key, value, message', BAD_VALUES)
def test_bad_value_gives_its_one_line_error(key, value, message):
  with pytest.raises(ConfigError) as error:
    validation.validate(with_value(key, value), num_devices=1)
  assert str(error.value) == message


def test_batch_not_divisible_by_devices():
  with pytest.raises(ConfigError) as error:
    validation.validate(with_value('batch_size', 100), num_devices=8)
  assert str(error.value) == (
      'config.batch_size=100 is not divisible by the 8 devices; use a multiple of 8.')


def test_the_first_mistake_in_the_fixed_order_is_the_one_reported():
  config = with_value('optimizer.l2', -0.001)  # an optimizer section check ...
  config.batch_size = 0  # ... after this run-level one
  config.mode = 'fit'
  with pytest.raises(ConfigError) as error:
    validation.validate(config, num_devices=1)
  assert str(error.value) == 'config.batch_size=0 must be a positive number.'


def test_defaults_are_valid():
  validation.validate(config_lib.base_config(), num_devices=8)


def test_crop_larger_than_the_resize():
  config = with_value('data.resize_shorter', 256)
  config.data.crop_size = 300
  with pytest.raises(ConfigError) as error:
    validation.validate(config, num_devices=1)
  assert str(error.value) == (
      'config.data.crop_size=300 must be at most config.data.resize_shorter=256, the side it'
      ' crops from.')


def test_the_reports_preprocessing_and_augmentations_are_valid():
  config = config_lib.base_config()
  config.data.resize_shorter, config.data.crop_size = 256, 224
  config.augment.update(translate=0.1, rotate_degrees=15.0, contrast=(0.7, 1.3),
                        color_jitter=(0.1, 0.1, 0.1), sharpness=(2.0, 0.1),
                        mixup_alpha=0.2, cutmix_alpha=1.0)
  validation.validate(config, num_devices=1)


@pytest.mark.parametrize('override, message', [
    ('--config.model.name=conv5',
     f"error: config.model.name='conv5' is not a valid choice; choose one of: {choices(MODELS)}"),
    ('--config.target_train_error=1.5',
     'error: config.target_train_error=1.5 must be in (0, 1), e.g. 0.25 to stop at 25%'
     ' training error.'),
])
def test_launch_prints_one_line_and_exits_2(override, message, tmp_path):
  result = run_launch('--config=configs/quickstart.py', override, f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == message
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'checkpoints').exists()
