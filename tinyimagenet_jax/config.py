"""Shared config defaults, the helpers every section's checks use, the run-level checks.

Every experiment file in `configs/` starts from `base_config()` and overrides
what it needs. Each value that cannot work becomes a one-line `ConfigError`
naming the key, the bad value and the valid choices: the run-level fields are
checked here, each registry's section in its own module (data in
`data.sources` and `data.transforms`, the model in `models`, the optimizer in
`optim`, members in `members`), all of them by `validation.validate`. Of the
package, this module imports only `errors`, so every module can import it.
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
  # Where batches are made (tinyimagenet_jax.data.resident): 'device' keeps the decoded
  # uint8 splits in device memory and gathers and augments batches inside the jitted
  # step; 'host' runs the grain pipeline; 'auto' picks 'device' when the splits fit
  # `device_memory_fraction` of one device's memory (host RAM on CPU) and every
  # configured augmentation has a device op. The two paths draw different data orders.
  c.data.placement = 'auto'
  c.data.device_memory_fraction = 0.3
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
  # Training steps per jitted call (a lax.scan) on the device path, so dispatch and host
  # synchronisation are paid once per call; 0 = auto (see tinyimagenet_jax.build).
  c.steps_per_call = 0
  c.target_train_error = config_dict.placeholder(float)  # e.g. 0.25; None = off
  # Checkpoints: at epoch ends, every `checkpoint_every_steps` (0 = only at
  # epoch ends) and on SIGTERM/SIGINT; the newest `max_checkpoints_to_keep`
  # and the best `keep_best_checkpoints` by `best_metric` are kept.
  c.checkpoint_every_steps = 0
  # An epoch end other than the last is saved only when this many seconds have
  # passed since the newest checkpoint (0 = every epoch end; with keep_best, every
  # one): a crash then recomputes at most that long, and short epochs do not pay a
  # save each (on 2 CPU cores about 80 ms, beside the next epoch's steps).
  c.checkpoint_min_seconds = 30
  c.max_checkpoints_to_keep = 2
  c.keep_best_checkpoints = 0
  # A key of the epoch records, e.g. val_top1, test_loss; '' = <data.eval_split>_top1.
  c.best_metric = ''
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
  # K models of one architecture as one program (tinyimagenet_jax.members), on every
  # backend: `count` members with seeds seed, seed + 1, ..., or one per entry of
  # `seeds` / `learning_rates`. `formulation`: how their convolutions batch ('auto':
  # 'fused' on CPU, 'vmap' on GPU/TPU); it changes speed, not results or files.
  c.members = ml_collections.ConfigDict()
  c.members.count = 1
  c.members.seeds = ()
  c.members.learning_rates = ()
  c.members.formulation = 'auto'
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
  # JAX's persistent compilation cache and the kept whole programs: '' = the folder JAX was
  # given (JAX_COMPILATION_CACHE_DIR), else ~/.cache/tinyimagenet_jax/jax (tuning.py).
  c.compilation_cache_dir = ''
  # True: the run's programs compile with build.QUICK_COMPILE_OPTIONS (on XLA:CPU, older
  # fusion emitters; LLVM at -O0 for the steps, -O1 for evaluations: compiles 2-4x faster,
  # steps 1.2-8x slower). For runs of a few steps, whose compiles cost more than their math.
  c.quick_compile = False
  c.progress_bar = True
  # Off a terminal (nohup, schedulers) the bar is one plain line this often, in seconds.
  c.progress_seconds = 30.0
  c.write_plots = True
  return c


EARLY_STOPPING_RULES = ('', 'rising', 'patience')
MODES = ('train', 'evaluate', 'predict')


# Helpers for every section's checks (the registries' own are in their modules).


def eval_metric(config: ml_collections.ConfigDict, metric: str) -> str:
  """The epoch records' key of `metric` on the eval split, e.g. 'validation_top1'."""
  return f'{config.data.eval_split}_{metric}'


def best_metric(config: ml_collections.ConfigDict) -> str:
  """The epoch-record key that ranks checkpoints for keep_best_checkpoints."""
  return config.best_metric or eval_metric(config, 'top1')


def one_of(key: str, value, choices: Iterable[str]) -> None:
  """Raises `config.<key>=<value> is not a valid choice; choose one of: ...` unless it is one."""
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(
        f'config.{key}={value!r} is not a valid choice; choose one of: '
        + ', '.join(choices)
    )


def is_number(value) -> bool:
  """Whether `value` is a finite int or float (not a bool)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def numbers(value, count: int) -> bool:
  """Whether `value` is a tuple or list of exactly `count` finite numbers."""
  return (isinstance(value, (tuple, list)) and len(value) == count
          and all(map(is_number, value)))


def require(ok: bool, key: str, value, requirement: str) -> None:
  """Raises `config.<key>=<value> must be <requirement>.` unless `ok`."""
  if not ok:
    raise ConfigError(f'config.{key}={value!r} must be {requirement}.')


def positive(key: str, value) -> None:
  """Raises `config.<key>=<value> must be a positive number.` unless it is one."""
  require(is_number(value) and value > 0, key, value, 'a positive number')


# The run-level checks; `tinyimagenet_jax.validation.validate` runs them with the
# sections' own checks, in one fixed order.


def validate_training(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Batch sizes (split evenly over the devices), epochs, steps per epoch, the
  compute dtype and label smoothing."""
  for key in ('batch_size', 'eval_batch_size', 'num_epochs'):
    positive(key, config[key])
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
  require(is_number(config.steps_per_call) and config.steps_per_call >= 0
          and int(config.steps_per_call) == config.steps_per_call, 'steps_per_call',
          config.steps_per_call, 'a whole number of steps per call, or 0 for auto')
  one_of('compute_dtype', config.compute_dtype, COMPUTE_DTYPES)
  if not 0 <= config.label_smoothing < 1:
    raise ConfigError(
        f'config.label_smoothing={config.label_smoothing!r} must be in [0, 1).')


def validate_checkpoints(config: ml_collections.ConfigDict) -> None:
  """The best-checkpoint ranking, the checkpoint interval and the training-error target."""
  one_of('best_mode', config.best_mode, ('max', 'min'))
  if config.checkpoint_every_steps < 0:
    raise ConfigError(f'config.checkpoint_every_steps={config.checkpoint_every_steps!r} must'
                      ' be a whole number of steps, or 0 for epoch ends only.')
  if config.checkpoint_min_seconds < 0:
    raise ConfigError(f'config.checkpoint_min_seconds={config.checkpoint_min_seconds!r} must'
                      ' be a whole number of seconds, or 0 to save every epoch end.')
  target = config.target_train_error
  if target is not None and not 0 < target < 1:
    raise ConfigError(
        f'config.target_train_error={target!r} must be in (0, 1), e.g. 0.25'
        ' to stop at 25% training error.'
    )


def validate_stopping(config: ml_collections.ConfigDict) -> None:
  """Early stopping and the snapshot epochs."""
  stop = config.early_stopping
  one_of('early_stopping.rule', stop.rule, EARLY_STOPPING_RULES)
  one_of('early_stopping.mode', stop.mode, ('max', 'min'))
  for key in ('rises', 'patience'):
    require(is_number(stop[key]) and stop[key] >= 1 and int(stop[key]) == stop[key],
            f'early_stopping.{key}', stop[key], 'a whole number of epochs >= 1')
  require(all(is_number(e) and e >= 1 and int(e) == e for e in config.snapshot_epochs),
          'snapshot_epochs', config.snapshot_epochs, 'epoch numbers >= 1, e.g. (4, 14, 28)')


def validate_mode(config: ml_collections.ConfigDict) -> None:
  """What launch.py does (`mode`), and which way a grid ranks its runs."""
  one_of('mode', config.mode, MODES)
  one_of('grid_mode', config.grid_mode, ('max', 'min'))
