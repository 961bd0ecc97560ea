"""Shared config defaults and the validation that runs before anything compiles.

Every experiment file in `configs/` starts from `base_config()` and overrides
what it needs. `validate` turns each value that cannot work into a one-line
`ConfigError` naming the key, the bad value and the valid choices.
"""

from collections.abc import Iterable
import math

import ml_collections
from ml_collections import config_dict

from tinyimagenet_jax.errors import ConfigError


COMPUTE_DTYPES = ('float32', 'bfloat16')


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment; configs override fields of this."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'  # a key of tinyimagenet_jax.data.sources.SOURCES
  c.data.root = ''  # image_folder: <root>/<split>/<class>/*.jpg
  c.data.data_dir = ''  # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
  c.data.manual_dir = ''  # TFDS manual_dir for archives placed by hand
  c.data.download = True  # TFDS: download and prepare when missing (needs internet)
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  # Carved from the train split with a seeded permutation: a count (>= 1) or a
  # fraction in (0, 1); 0 means no validation split.
  c.data.validation_size = 0.0
  c.data.num_workers = 0  # grain worker processes (0: decode in threads)
  c.data.num_threads = 2  # grain reader threads per process
  c.data.prefetch_batches = 4
  # Per-channel normalisation after scaling pixels to [0, 1]; empty = none.
  c.data.mean = ()
  c.data.std = ()

  c.augment = ml_collections.ConfigDict()
  c.augment.flip_prob = 0.0  # random horizontal flip probability
  c.augment.pad_crop = 0  # pixels of zero padding before a random crop back

  c.model = ml_collections.ConfigDict()
  c.model.name = 'conv4'  # a key of tinyimagenet_jax.models.MODELS

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'  # a key of tinyimagenet_jax.optim.OPTIMIZERS
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.0
  c.optimizer.nesterov = False
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.rho = 0.95  # adadelta
  c.optimizer.rmsprop_decay = 0.9
  c.optimizer.initial_accumulator_value = 0.1  # adagrad, proximal_adagrad
  c.optimizer.proximal_l1 = 0.0  # proximal_adagrad's l1 and l2 strengths
  c.optimizer.proximal_l2 = 0.0
  c.optimizer.schedule = 'constant'  # a key of tinyimagenet_jax.optim.SCHEDULES
  c.optimizer.decay_rate = 0.1  # step / exponential decay: multiply by this ...
  c.optimizer.decay_every_epochs = 30.0  # ... every this many epochs
  c.optimizer.warmup_epochs = 0.0  # cosine: linear warmup, then cosine ...
  c.optimizer.final_learning_rate = 0.0  # ... down to this
  c.optimizer.onecycle_pct_start = 0.3  # onecycle: fraction of the run rising
  c.optimizer.onecycle_div_factor = 25.0  # start = learning_rate / this
  c.optimizer.onecycle_final_div_factor = 1e4  # end = start / this
  c.optimizer.cycle_momentum = (0.85, 0.95)  # onecycle: (low, high); () = off
  # Regularisation (see optim.py for the order in the chain).
  c.optimizer.l2 = 0.0  # loss + l2 * sum(kernel**2), kernels only (Keras)
  c.optimizer.weight_decay = 0.0  # PyTorch-style; decoupled for adamw
  c.optimizer.clip_global_norm = 0.0  # 0 = off
  c.optimizer.clip_value = 0.0  # 0 = off

  c.label_smoothing = 0.0
  c.compute_dtype = 'float32'  # 'bfloat16': mixed precision (float32 params)

  c.batch_size = 128  # global batch, split over all devices
  c.eval_batch_size = 256
  c.num_epochs = 10  # a cap; the run may stop earlier (target_train_error)
  c.steps_per_epoch = 0  # 0: one full pass over the training split per epoch
  c.target_train_error = config_dict.placeholder(float)  # e.g. 0.25; None = off
  c.checkpoint_every_epochs = 1
  c.max_checkpoints_to_keep = 2
  c.progress_bar = True
  c.write_plots = True
  return c


def _one_of(key: str, value, choices: Iterable[str]) -> None:
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(
        f'config.{key}={value!r} is not a valid choice; choose one of: '
        + ', '.join(choices)
    )


def _positive(key: str, value) -> None:
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
      math.isfinite(value) and value > 0
  ):
    raise ConfigError(f'config.{key}={value!r} must be a positive number.')


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError (one line) for the first value that cannot work."""
  from tinyimagenet_jax import models, optim  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax.data import sources  # pylint: disable=g-import-not-at-top

  _one_of('data.name', config.data.name, sources.SOURCES)
  _one_of('model.name', config.model.name, models.MODELS)
  _one_of('optimizer.name', config.optimizer.name, optim.OPTIMIZERS)
  _one_of('optimizer.schedule', config.optimizer.schedule, optim.SCHEDULES)
  _positive('optimizer.learning_rate', config.optimizer.learning_rate)
  for key in ('batch_size', 'eval_batch_size', 'num_epochs'):
    _positive(key, config[key])
    if int(config[key]) != config[key]:
      raise ConfigError(f'config.{key}={config[key]!r} must be a whole number.')
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] % num_devices:
      raise ConfigError(
          f'config.{key}={config[key]} is not divisible by the {num_devices}'
          f' devices; use a multiple of {num_devices}.'
      )
  if config.steps_per_epoch < 0 or int(config.steps_per_epoch) != config.steps_per_epoch:
    raise ConfigError(
        f'config.steps_per_epoch={config.steps_per_epoch!r} must be a whole'
        ' number of steps, or 0 for one full pass over the training split.')
  _one_of('compute_dtype', config.compute_dtype, COMPUTE_DTYPES)
  if not 0 <= config.label_smoothing < 1:
    raise ConfigError(
        f'config.label_smoothing={config.label_smoothing!r} must be in [0, 1).')
  for key in ('l2', 'weight_decay', 'clip_global_norm', 'clip_value', 'warmup_epochs'):
    if config.optimizer[key] < 0:
      raise ConfigError(f'config.optimizer.{key}={config.optimizer[key]!r} must be >= 0'
                        ' (0 turns it off).')
  target = config.target_train_error
  if target is not None and not 0 < target < 1:
    raise ConfigError(
        f'config.target_train_error={target!r} must be in (0, 1), e.g. 0.25'
        ' to stop at 25% training error.'
    )
  size = config.data.validation_size
  if size < 0 or (size >= 1 and int(size) != size):
    raise ConfigError(
        f'config.data.validation_size={size!r} must be a count (>= 1), a'
        ' fraction in (0, 1), or 0 for none.'
    )
  if len(config.data.mean) != len(config.data.std):
    raise ConfigError(
        f'config.data.mean={tuple(config.data.mean)} and config.data.std='
        f'{tuple(config.data.std)} must have one value per channel each.'
    )
  if not 0 <= config.augment.flip_prob <= 1:
    raise ConfigError(
        f'config.augment.flip_prob={config.augment.flip_prob!r} must be a'
        ' probability in [0, 1].'
    )


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """A duration in (possibly fractional) epochs, as a whole number of steps."""
  return max(1, round(epochs * steps_per_epoch))
