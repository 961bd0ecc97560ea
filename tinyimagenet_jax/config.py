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
  # tiny_imagenet: 0 = all 200 classes (official splits; test is unlabelled), else a
  # subset of that many classes drawn with subset_seed, subset_split images per
  # class as (train, validation, test) from the official training images.
  c.data.subset_classes = 0
  c.data.subset_split = (300, 100, 100)
  c.data.subset_seed = 0
  # Skip unreadable inputs, log and record them instead of stopping: image_folder
  # drops bad files when listing (source.skipped); the tiny_imagenet build skips
  # bad images and annotation lines (dataset metadata).
  c.data.skip_corrupt = False
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  # Keep only these classes (names as the source gives them), relabelled 0..K-1 in
  # this order, e.g. ('car', 'deer', 'horse', 'monkey', 'truck'); () = all classes.
  c.data.classes = ()
  # Carved from the train split with a seeded permutation: a count (>= 1) or a
  # fraction in (0, 1); 0 means no validation split.
  c.data.validation_size = 0.0
  c.data.num_workers = 0  # grain worker processes (0: decode in threads)
  c.data.num_threads = 2  # grain reader threads per process
  c.data.prefetch_batches = 4
  # Decode each split once into <cache_dir>/<key>.npy and read the pixels from there
  # (tinyimagenet_jax.data.decoded_cache); '' = ~/.cache/tinyimagenet_jax/decoded.
  c.data.decoded_cache = False
  c.data.cache_dir = ''
  # Per-channel normalisation after scaling pixels to [0, 1]; empty = none.
  c.data.mean = ()
  c.data.std = ()
  # AlexNet-style preprocessing (Krizhevsky et al. 2012), 0 = off: a bilinear
  # resize so the shorter side is `resize_shorter` (e.g. 256), then a square
  # `crop_size` crop (e.g. 224): random for training, central for evaluation.
  c.data.resize_shorter = 0
  c.data.crop_size = 0

  # Training-only augmentation, 0 or () = off; applied in the order of
  # tinyimagenet_jax.data.transforms.AUGMENTATIONS (geometric, then photometric).
  c.augment = ml_collections.ConfigDict()
  c.augment.flip_prob = 0.0  # random horizontal flip probability
  c.augment.pad_crop = 0  # pixels of zero padding before a random crop back
  c.augment.translate = 0.0  # largest shift, a fraction of height/width, e.g. 0.1
  c.augment.rotate_degrees = 0.0  # largest rotation either way, e.g. 15
  c.augment.contrast = ()  # (lo, hi) contrast factor range, e.g. (0.7, 1.3)
  c.augment.color_jitter = ()  # (brightness, contrast, saturation), e.g. (0.1, 0.1, 0.1)
  c.augment.sharpness = ()  # (factor, prob), e.g. (2.0, 0.1)
  # Batch-level mixing with a partner (tinyimagenet_jax.data.batch_ops), with
  # lambda ~ Beta(alpha, alpha); with both set, each batch gets one at random.
  c.augment.mixup_alpha = 0.0  # e.g. 0.2
  c.augment.cutmix_alpha = 0.0  # e.g. 1.0

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
  # Layer-wise fine-tuning: '<param path prefix>@<epoch>' entries; parameters whose
  # path ('block5_conv1/kernel') starts with the prefix get zero updates before that
  # many completed epochs ('inf': the whole run), e.g. ('block4@6', 'block5@3').
  c.optimizer.freeze = ()

  c.label_smoothing = 0.0
  c.compute_dtype = 'float32'  # 'bfloat16': mixed precision (float32 params)

  c.batch_size = 128  # global batch, split over all devices
  c.eval_batch_size = 256
  c.num_epochs = 10  # a cap; the run may stop earlier (target_train_error)
  c.steps_per_epoch = 0  # 0: one full pass over the training split per epoch
  c.target_train_error = config_dict.placeholder(float)  # e.g. 0.25; None = off
  # Checkpoints: at every epoch end, every `checkpoint_every_steps` (0 = only
  # at epoch ends) and on SIGTERM/SIGINT; the newest `max_checkpoints_to_keep`
  # and the best `keep_best_checkpoints` by `best_metric` are kept.
  c.checkpoint_every_steps = 0
  c.max_checkpoints_to_keep = 2
  c.keep_best_checkpoints = 0
  c.best_metric = 'test_top1'  # a key of the epoch records, e.g. val_top1, test_loss
  c.best_mode = 'max'  # 'min' for losses and errors
  c.restart = False  # True: delete this workdir's checkpoints and metrics, start over
  c.init_from = ''  # another run's workdir/checkpoint: start from its matching weights
  # Early stopping (besides num_epochs and target_train_error): '' = off;
  # 'rising': val_loss rose `rises` epochs in a row while train_loss fell (the
  # second report's rule); 'patience': `metric` not better than its best for
  # `patience` epochs (`mode` 'min' or 'max'). Both need an eval split with the metric.
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.rule = ''
  c.early_stopping.rises = 3
  c.early_stopping.patience = 5
  c.early_stopping.metric = 'val_loss'
  c.early_stopping.mode = 'min'
  c.snapshot_epochs = ()  # keep the weights after these epochs (snapshots/epoch_<n>.npz)
  # K models of one architecture as one vmapped program (tinyimagenet_jax.members):
  # `count` members with seeds seed, seed + 1, ..., or one per entry of `seeds` /
  # `learning_rates`. Experiments run them vmapped or one after another per `vmap`
  # ('auto': vmapped on GPU/TPU, separate on CPU).
  c.members = ml_collections.ConfigDict()
  c.members.count = 1
  c.members.seeds = ()
  c.members.learning_rates = ()
  c.members.vmap = 'auto'
  # What launch.py does: 'train' (resumes), 'evaluate' (the newest checkpoint on
  # data.eval_split: metrics, class-wise report) or 'predict' (a predictions file
  # for data.eval_split, e.g. the unlabelled Tiny ImageNet test split).
  c.mode = 'train'
  c.experiment = ''  # a key of tinyimagenet_jax.experiments.EXPERIMENTS; '' = one run
  # experiment='grid': every combination of 'key=value1,value2' entries, e.g.
  # ('optimizer.learning_rate=0.01,0.05',), ranked by the best grid_metric.
  c.grid = ()
  c.grid_metric = 'val_top1'
  c.grid_mode = 'max'
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


def _is_number(value) -> bool:
  """Whether `value` is a finite int or float (not a bool)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _numbers(value, count: int) -> bool:
  """Whether `value` is a tuple or list of exactly `count` finite numbers."""
  return (isinstance(value, (tuple, list)) and len(value) == count
          and all(map(_is_number, value)))


def _require(ok: bool, key: str, value, requirement: str) -> None:
  """Raises `config.<key>=<value> must be <requirement>.` unless `ok`."""
  if not ok:
    raise ConfigError(f'config.{key}={value!r} must be {requirement}.')


def _positive(key: str, value) -> None:
  _require(_is_number(value) and value > 0, key, value, 'a positive number')


def _validate_crop(data: ml_collections.ConfigDict) -> None:
  """resize_shorter and crop_size are pixel counts, and the crop fits in the resize."""
  for key in ('resize_shorter', 'crop_size'):
    value = data[key]
    _require(_is_number(value) and value >= 0 and int(value) == value, f'data.{key}',
             value, 'a whole number of pixels, or 0 for off')
  if data.resize_shorter and data.crop_size > data.resize_shorter:
    raise ConfigError(
        f'config.data.crop_size={data.crop_size!r} must be at most'
        f' config.data.resize_shorter={data.resize_shorter!r}, the side it crops from.')


def _validate_augment(augment: ml_collections.ConfigDict) -> None:
  """Every config.augment value that would otherwise fail inside a data worker."""
  _require(0 <= augment.flip_prob <= 1, 'augment.flip_prob', augment.flip_prob,
           'a probability in [0, 1]')
  _require(_is_number(augment.translate) and 0 <= augment.translate < 1,
           'augment.translate', augment.translate,
           'a fraction of the image size in [0, 1), e.g. 0.1, or 0 for off')
  _require(_is_number(augment.rotate_degrees) and augment.rotate_degrees >= 0,
           'augment.rotate_degrees', augment.rotate_degrees,
           'a number of degrees >= 0, e.g. 15, or 0 for off')
  contrast = augment.contrast
  _require(not contrast or (_numbers(contrast, 2) and 0 < contrast[0] <= contrast[1]),
           'augment.contrast', contrast,
           '2 positive numbers (lo, hi) with lo <= hi, e.g. (0.7, 1.3), or () for off')
  jitter = augment.color_jitter
  _require(not jitter or (_numbers(jitter, 3) and min(jitter) >= 0),
           'augment.color_jitter', jitter,
           '3 numbers >= 0 (brightness, contrast, saturation), e.g. (0.1, 0.1, 0.1),'
           ' or () for off')
  sharpness = augment.sharpness
  _require(not sharpness or (_numbers(sharpness, 2) and sharpness[0] >= 0
                             and 0 <= sharpness[1] <= 1),
           'augment.sharpness', sharpness,
           '(factor, prob) with factor >= 0 and prob in [0, 1], e.g. (2.0, 0.1), or () for off')
  for key in ('mixup_alpha', 'cutmix_alpha'):
    _require(_is_number(augment[key]) and augment[key] >= 0, f'augment.{key}', augment[key],
             'a Beta(alpha, alpha) parameter >= 0, e.g. 0.2, or 0 for off')


def _freeze_entry(entry) -> tuple[str, float]:
  """An optimizer.freeze entry 'prefix@epoch' as (prefix, epoch or math.inf), or ConfigError."""
  prefix, at, epoch = entry.partition('@') if isinstance(entry, str) else ('', '', '')
  if not (prefix and at and (epoch == 'inf' or (epoch.isascii() and epoch.isdigit()))):
    raise ConfigError(
        f"config.optimizer.freeze entry {entry!r} must be '<param path prefix>@<epoch>'"
        " with a whole number of epochs or inf, e.g. 'block5@3' or 'block1@inf'.")
  return prefix, math.inf if epoch == 'inf' else int(epoch)


def parse_freeze(entries) -> list[tuple[str, float]]:
  """The (prefix, epoch) pairs of config.optimizer.freeze, checked before anything compiles."""
  return [_freeze_entry(entry) for entry in entries]


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
  parse_freeze(config.optimizer.freeze)
  _one_of('best_mode', config.best_mode, ('max', 'min'))
  if config.checkpoint_every_steps < 0:
    raise ConfigError(f'config.checkpoint_every_steps={config.checkpoint_every_steps!r} must'
                      ' be a whole number of steps, or 0 for epoch ends only.')
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
  _require(_numbers(config.data.subset_split, 3), 'data.subset_split', config.data.subset_split,
           'three per-class image counts (train, validation, test), e.g. (300, 100, 100)')
  _require(_is_number(config.data.subset_classes) and config.data.subset_classes >= 0,
           'data.subset_classes', config.data.subset_classes,
           'a number of Tiny ImageNet classes, or 0 for all 200')
  classes = config.data.classes
  _require(isinstance(classes, (tuple, list)) and all(isinstance(name, str) and name
                                                      for name in classes)
           and len(set(classes)) == len(classes), 'data.classes', classes,
           "distinct class names to keep, e.g. ('car', 'deer'), or () for all classes")
  if len(config.data.mean) != len(config.data.std):
    raise ConfigError(
        f'config.data.mean={tuple(config.data.mean)} and config.data.std='
        f'{tuple(config.data.std)} must have one value per channel each.'
    )
  _validate_crop(config.data)
  _validate_augment(config.augment)
  _validate_runs(config)


EARLY_STOPPING_RULES = ('', 'rising', 'patience')
MODES = ('train', 'evaluate', 'predict')


def _validate_runs(config: ml_collections.ConfigDict) -> None:
  """Early stopping, snapshots, members and mode."""
  from tinyimagenet_jax import members  # pylint: disable=g-import-not-at-top

  stop = config.early_stopping
  _one_of('early_stopping.rule', stop.rule, EARLY_STOPPING_RULES)
  _one_of('early_stopping.mode', stop.mode, ('max', 'min'))
  for key in ('rises', 'patience'):
    _require(_is_number(stop[key]) and stop[key] >= 1 and int(stop[key]) == stop[key],
             f'early_stopping.{key}', stop[key], 'a whole number of epochs >= 1')
  _require(all(_is_number(e) and e >= 1 and int(e) == e for e in config.snapshot_epochs),
           'snapshot_epochs', config.snapshot_epochs, 'epoch numbers >= 1, e.g. (4, 14, 28)')
  _require(_is_number(config.members.count) and config.members.count >= 1,
           'members.count', config.members.count, 'a whole number of models >= 1')
  _require(all(_is_number(rate) and rate > 0 for rate in config.members.learning_rates),
           'members.learning_rates', config.members.learning_rates,
           'positive learning rates, one per member')
  members.validate_members(config)
  _one_of('mode', config.mode, MODES)
  _one_of('grid_mode', config.grid_mode, ('max', 'min'))


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """A duration in (possibly fractional) epochs, as a whole number of steps."""
  return max(1, round(epochs * steps_per_epoch))
