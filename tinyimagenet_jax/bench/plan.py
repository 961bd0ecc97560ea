"""Planning a Colab session: device memory per dataset and each report's training cost.

    python -m tinyimagenet_jax.bench --what=plan [--json=plan.json]
    python -m tinyimagenet_jax.bench --what=plan --config=configs/tiny_ensembles.py

Nothing is trained and no data is read: sizes come from the datasets' known
split sizes and shapes, FLOPs from XLA's cost analysis of the lowered (not
compiled) steps, on abstract states (`jax.eval_shape`). Printed first: the
device memory each dataset's splits take on the device path
(`data.placement='device'`: uint8 images + int32 labels, `resident.split_bytes`,
replicated on every device) and what `'auto'` picks on a Colab TPU v2-8 core
and a T4 (printed only: the command's JSON holds the returned rows). Returned,
printed and written as JSON by the command: one row per run of each report's
experiment, as its `get_config()` (full mode) runs it, and a total per report;
with --config, the runs of that config instead.

Counting: XLA's `flops` of `steps.train_step` (forward, backward, loss,
optimizer update; no device-side augmentation) on one batch, and of
`steps.eval_step` on each padded eval batch, every eval split once per epoch.
XLA counts a dot or convolution as 2 x its multiply-adds, a convolution's only
over the taps on real (not padding) pixels, plus one flop per element of each
elementwise op. K stacked members (`config.members`) count K times one model.
Epochs are the config's cap: a run that stops at a target or by early stopping
costs at most that. Frozen layers (`optimizer.freeze`) still get gradients, so
they count in full.
"""

from collections.abc import Callable, Sequence
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyimagenet_jax import build, members, models, optim, steps
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import resident, sources, transforms
from tinyimagenet_jax.experiments import (cifar10_conv3, cifar100_lenet, relu_vs_tanh,
                                          tiny_ensembles, tiny_models)
from tinyimagenet_jax.experiments import common as experiments_common
from tinyimagenet_jax.state import create_train_state

GIB, MIB = 2**30, 2**20


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's decoded image shape, class count and examples per split (balanced classes)."""

  shape: tuple[int, int, int]
  num_classes: int
  splits: dict[str, int]


DATASETS = {
    'cifar10': Dataset((32, 32, 3), 10, {'train': 50_000, 'test': 10_000}),
    'cifar100': Dataset((32, 32, 3), 100, {'train': 50_000, 'test': 10_000}),
    'stl10': Dataset((96, 96, 3), 10, {'train': 5_000, 'test': 8_000}),
    'tiny_imagenet': Dataset((64, 64, 3), 200, {'train': 100_000, 'validation': 10_000}),
    'digits': Dataset((8, 8, 1), 10, {'train': 1_797 - sources.DIGITS_TEST_SIZE,
                                      'test': sources.DIGITS_TEST_SIZE}),
}

# The memory `resident.device_memory` reads on one device: a TPU v2 core's HBM, and the
# pool JAX's GPU allocator reserves by default (75% of a T4's 15 GiB).
DEVICE_MEMORY = {'tpu_v2_8': 8 * GIB, 't4': int(0.75 * 15 * GIB)}

# Peak TFLOP/s by compute dtype. JAX computes float32 convolutions and dots at its default
# precision: TF32 on an A100, bfloat16 passes on a TPU; a T4 has neither (true float32).
PEAK_TFLOPS = {
    't4': {'float32': 8.1, 'bfloat16': 65.0},  # 65: fp16 tensor cores (a T4 has no bf16 ones)
    'a100': {'float32': 156.0, 'bfloat16': 312.0},
    'tpu_v2_8': {'float32': 180.0, 'bfloat16': 180.0},  # all 8 cores
}
# The share of that peak these small convnets are assumed to sustain (why: COST_HEADING).
FRACTION_OF_PEAK = {'t4': 0.3, 'a100': 0.15, 'tpu_v2_8': 0.15}

MEMORY_HEADING = """\
## Device memory of each dataset's splits on the device path (data.placement='device')

uint8 images + int32 labels, replicated on every device: a TPU v2-8 holds 8 copies,
one per core. 'auto' picks the device when the splits fit data.device_memory_fraction
(default {fraction:g}) of ONE device's memory: a TPU v2 core's 8 GiB of HBM; a T4's
allocator pool (JAX reserves 75% of its 15 GiB unless XLA_PYTHON_CLIENT_MEM_FRACTION
says otherwise). In brackets: the share of that budget the splits take.
"""

COST_HEADING = """\
## Training cost of each report's runs (full configs; XLA's flop count of the lowered steps)

GFLOP_per_step: one training step of the run's K models; eval_GFLOP_per_epoch: every
eval split once, in padded batches; PFLOP: epochs x (steps x step + eval); images_M:
training images fed (epochs x steps x batch). Hours at a share of each peak (bfloat16
runs at the bf16 peaks): T4 {t4:.0%} of 8.1 TFLOP/s float32; A100 {a100:.0%} of 156 TF32
(JAX's default precision for float32 convolutions and dots; 19.5 with
precision='highest', 312 bf16); TPU v2-8 {tpu_v2_8:.0%} of 180 bf16 (its default for float32).
These nets have 32-512 channels on 4-64 px maps at batches of 32-128, so their matmuls
are small and batch norm, pooling and elementwise ops are bound by memory bandwidth:
a T4's float32 CUDA cores come nearest their peak; an A100's tensor cores and a TPU's
128x128 matrix units (16 images per core at batch 128 on a v2-8) idle more. A step
also takes at least its kernels' launch time (of order 0.1 ms on a GPU), so runs of a
few GFLOP per step or less (linear, the MLPs and LeNets, conv3_bn, tiny_m1) take
longer than their A100 and TPU hours say. Epochs are caps: a run that stops at a
target or by early stopping costs at most its row.
"""


# Sizes and shapes of a run's data, from its config alone.


def dataset_splits(data: ml_collections.ConfigDict) -> dict[str, int]:
  """Examples per split of `data`'s dataset: a Tiny ImageNet subset's own splits, or the
  official ones reduced to `data.classes` (every class the same size)."""
  dataset = DATASETS[data.name]
  if data.name == 'tiny_imagenet' and data.subset_classes:
    return {split: per_class * data.subset_classes for split, per_class in
            zip(('train', 'validation', 'test'), data.subset_split)}
  kept = len(data.classes) or dataset.num_classes
  return {split: count * kept // dataset.num_classes for split, count in dataset.splits.items()}


def run_splits(data: ml_collections.ConfigDict) -> dict[str, int]:
  """Examples in the splits a run of `data` uses: 'train' (less a carved 'val'), 'val', 'test'."""
  total = dataset_splits(data)
  train = total[data.train_split]
  val = sources.validation_count(data.validation_size, train) if data.validation_size else 0
  return {'train': train - val, **({'val': val} if val else {}), 'test': total[data.eval_split]}


def class_count(data: ml_collections.ConfigDict) -> int:
  """The classes a run of `data` predicts."""
  if data.name == 'tiny_imagenet' and data.subset_classes:
    return data.subset_classes
  return len(data.classes) or DATASETS[data.name].num_classes


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The model input's shape: the decoded image after the config's resize and crop."""
  return transforms.make_preprocess(config)[1].output_shape(DATASETS[config.data.name].shape)


def shape_text(shape: Sequence[int]) -> str:
  """(32, 32, 3) -> '32x32x3'."""
  return 'x'.join(map(str, shape))


# Table (a): device memory and the placement 'auto' picks.


def split_bytes(count: int, shape: Sequence[int]) -> int:
  """`resident.split_bytes` of `count` images of `shape`, on a zero-stride stand-in (no memory)."""
  stand_in = sources.ArraySource(np.broadcast_to(np.uint8(0), (count, *shape)),
                                 np.broadcast_to(np.int32(0), (count,)), ())
  return resident.split_bytes(stand_in)


def auto_placement(needed: int, device_bytes: int, fraction: float) -> str:
  """What `resident.resolve_placement` picks for 'auto' when every augmentation has a device
  op: 'device' if the splits fit `fraction` of one device's memory, else 'host'."""
  return 'device' if needed <= fraction * device_bytes else 'host'


def memory_row(label: str, data: ml_collections.ConfigDict, splits: Sequence[str],
               note: str) -> dict:
  """One dataset's resident bytes and the placement 'auto' picks on each machine."""
  sizes, shape = dataset_splits(data), DATASETS[data.name].shape
  needed = sum(split_bytes(sizes[split], shape) for split in splits)
  fraction = data.device_memory_fraction
  row = {'dataset': label, 'splits': ' + '.join(f'{split} {sizes[split]:,}' for split in splits),
         'image': shape_text(shape), 'resident_MiB': round(needed / MIB, 1)}
  for machine, memory in DEVICE_MEMORY.items():
    row[f'auto_{machine}'] = (f'{auto_placement(needed, memory, fraction)}'
                              f' ({needed / (fraction * memory):.0%})')
  if data.resize_shorter:
    resized = transforms.shorter_side_shape(*shape[:2], data.resize_shorter)
    stored = sum(split_bytes(sizes[split], (*resized, shape[2])) for split in splits)
    note += (f'; stored resized ({shape_text(resized)} uint8) it would take'
             f' {stored / GIB:.1f} GiB')
  return {**row, 'note': note}


def data_config(**overrides) -> ml_collections.ConfigDict:
  """The default `config.data` with `overrides`."""
  data = base_config().data
  data.update(overrides)
  return data


def memory_cases() -> list[tuple[str, ml_collections.ConfigDict, tuple[str, ...], str]]:
  """(label, config.data, the splits kept resident, note) of each dataset the reports use."""
  stl5 = build.load_config('cifar100_lenet').transfer.data.classes
  tiny = lambda **more: data_config(name='tiny_imagenet', **more)
  every = ('train', 'validation', 'test')
  return [
      ('CIFAR-10', data_config(name='cifar10'), ('train', 'test'),
       'reports 1, 2 (report 2 carves its 5,000 validation images out of train)'),
      ('CIFAR-100', data_config(name='cifar100'), ('train', 'test'), 'report 4'),
      ('STL-10', data_config(name='stl10'), ('train', 'test'),
       'the labelled splits (the 100,000 unlabelled images are not used)'),
      (f'STL-10, {len(stl5)} classes', data_config(name='stl10', classes=stl5), ('train', 'test'),
       'report 4 transfer: kept at 96x96, resized to 32x32 on the device'),
      ('Tiny ImageNet', tiny(), ('train', 'validation'),
       'reports 3, 5 (report 3 carves its 10,000 validation images out of train)'),
      ('Tiny ImageNet, 100 classes', tiny(subset_classes=100), every,
       "report 1's subset, 300/100/100 per class"),
      ('the same, AlexNet resize 256 + crop 224',
       tiny(subset_classes=100, resize_shorter=256, crop_size=224), every,
       "report 1's preprocessing: the decoded 64x64 uint8 stays resident; resize and crop"
       ' run on the device, per batch'),
  ]


# Table (b): each run's FLOPs, images and hours.


def abstract_state(config: ml_collections.ConfigDict, num_classes: int,
                   shape: tuple[int, ...], steps_per_epoch: int):
  """One model's fresh TrainState for `config`, as shapes only (`jax.eval_shape`)."""
  model = models.build_model(config.model, num_classes)
  tx = optim.build_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
  return jax.eval_shape(lambda: create_train_state(
      model, tx, config.seed, shape, label_smoothing=config.label_smoothing,
      compute_dtype=config.compute_dtype))


def abstract_batch(batch_size: int, shape: tuple[int, ...], masked: bool = False) -> dict:
  """A batch as shapes: float32 images, int32 labels and, for evaluation, the mask."""
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  if masked:
    batch['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_)
  return batch


def lowered_flops(step_fn: Callable, state, batch: dict) -> float:
  """XLA's flop count of `step_fn(state, batch)`, lowered (not compiled)."""
  return float(jax.jit(step_fn).lower(state, batch).cost_analysis()['flops'])


def hours(flops: float, machine: str, dtype: str) -> float:
  """Hours `flops` take on `machine` at its FRACTION_OF_PEAK of its peak for `dtype`."""
  return flops / (FRACTION_OF_PEAK[machine] * PEAK_TFLOPS[machine][dtype] * 1e12) / 3600


def run_note(config: ml_collections.ConfigDict) -> str:
  """What bounds or shapes a run's cost, for its row."""
  notes = []
  if config.target_train_error is not None:
    notes.append(f'cap: stops at train error <= {config.target_train_error:g}')
  if config.early_stopping.rule:
    notes.append(f"cap: early stopping '{config.early_stopping.rule}'")
  if config.optimizer.freeze:
    notes.append('frozen layers counted in full')
  if config.init_from:
    notes.append(f'from {config.init_from}')
  if config.data.resize_shorter:
    notes.append(f'resized on the device from {shape_text(DATASETS[config.data.name].shape)}')
  return '; '.join(notes)


def run_row(report: str, name: str, config: ml_collections.ConfigDict) -> dict:
  """One run's cost over its epoch cap, unrounded."""
  sizes, shape = run_splits(config.data), input_shape(config)
  steps_per_epoch = build.steps_per_epoch_for(config, sizes['train'])
  count = members.member_count(config)
  state = abstract_state(config, class_count(config.data), shape, steps_per_epoch)
  train = count * lowered_flops(steps.train_step, state,
                                abstract_batch(config.batch_size, shape))
  eval_batches = sum(-(-size // config.eval_batch_size)
                     for split, size in sizes.items() if split != 'train')
  evaluation = count * eval_batches * lowered_flops(
      steps.eval_step, state, abstract_batch(config.eval_batch_size, shape, masked=True))
  total = config.num_epochs * (steps_per_epoch * train + evaluation)
  return {'report': report, 'run': name, 'model': config.model.name, 'data': config.data.name,
          'splits': '/'.join(f'{size:,}' for size in sizes.values()), 'input': shape_text(shape),
          'classes': class_count(config.data), 'K': count, 'dtype': config.compute_dtype,
          'batch': config.batch_size, 'steps_per_epoch': steps_per_epoch,
          'epochs': config.num_epochs, 'GFLOP_per_step': train / 1e9,
          'eval_GFLOP_per_epoch': evaluation / 1e9, 'PFLOP': total / 1e15,
          'images_M': config.num_epochs * steps_per_epoch * config.batch_size / 1e6,
          **{f'{machine}_h': hours(total, machine, config.compute_dtype)
             for machine in PEAK_TFLOPS},
          'note': run_note(config)}


SUMMED = ('PFLOP', 'images_M', *(f'{machine}_h' for machine in PEAK_TFLOPS))


def total_row(report: str, rows: Sequence[dict]) -> dict:
  """The sums of `rows`' PFLOP, images and hours."""
  return {'report': report, 'run': 'total', **{key: sum(row[key] for row in rows)
                                              for key in SUMMED}}


def rounded(row: dict) -> dict:
  """`row` with every float to 3 significant digits (whole from 100 on)."""
  return {key: significant(value) if isinstance(value, float) else value
          for key, value in row.items()}


def significant(value: float) -> float | int:
  """`value` to 3 significant digits, as an int from 100 on."""
  value = float(f'{value:.3g}')
  return int(value) if abs(value) >= 100 else value


def report_rows(report: str, runs: dict[str, ml_collections.ConfigDict]) -> list[dict]:
  """A row per run and, for several runs, their total; rounded."""
  rows = [run_row(report, name, config) for name, config in runs.items()]
  return [rounded(row) for row in rows + ([total_row(report, rows)] if len(rows) > 1 else [])]


# Each report's runs, as its experiment module trains them.

TRANSFER_SOURCE = f'exp2_{cifar100_lenet.LENET}'


def cifar100_lenet_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The fourth report's runs: baselines (stacked seeds), experiments 1 and 2, and the
  transfer, from TRANSFER_SOURCE (the best LeNet is known only after training)."""
  tuned = cifar100_lenet.tuned_runs(config)
  baselines = {name: run for model in config.study.models
               for name, run in experiments_common.member_runs(
                   f'baseline_{model}', cifar100_lenet.baseline_config(config, model),
                   cifar100_lenet.baseline_seeds(config)).items()}
  return baselines | tuned | cifar100_lenet.transfer_runs(config, tuned[TRANSFER_SOURCE],
                                                          TRANSFER_SOURCE)


def tiny_ensembles_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The fifth report's runs: M1-M4, then the stacked M3 members."""
  return tiny_ensembles.model_runs(config) | tiny_ensembles.member_runs(config)


EXPERIMENT_RUNS: dict[str, Callable[[ml_collections.ConfigDict],
                                    dict[str, ml_collections.ConfigDict]]] = {
    'relu_vs_tanh': relu_vs_tanh.candidate_runs,
    'cifar10_conv3': cifar10_conv3.all_runs,
    'tiny_models': tiny_models.experiment_runs,
    'cifar100_lenet': cifar100_lenet_runs,
    'tiny_ensembles': tiny_ensembles_runs,
}
REPORTS = ('relu_vs_tanh', 'cifar10_conv3', 'tiny_models', 'cifar100_lenet', 'tiny_ensembles')


def runs_of(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The runs `config` trains: its experiment's, or itself as the one run 'run'."""
  if not config.experiment:
    return {'run': config}
  if config.experiment not in EXPERIMENT_RUNS:
    raise ValueError(f'The plan knows the runs of experiments {", ".join(EXPERIMENT_RUNS)},'
                     f' not {config.experiment!r}; pass one of their configs, or a single run.')
  return EXPERIMENT_RUNS[config.experiment](config)


def alexnet_config() -> ml_collections.ConfigDict:
  """AlexNet for one epoch on the first report's 100-class subset with its 256/224
  preprocessing: the report prepares this data but trains nothing on it."""
  config = base_config()
  config.data.update(name='tiny_imagenet', subset_classes=100, eval_split='validation',
                     resize_shorter=256, crop_size=224)
  config.model.name = 'alexnet'
  config.num_epochs = 1
  return config


def plan(args: common.Args) -> list[dict]:
  """Prints the memory table; returns the cost rows of every report's runs (or of
  `args.config`'s runs), with a total per report."""
  print(MEMORY_HEADING.format(fraction=base_config().data.device_memory_fraction))
  print(common.format_table([memory_row(*case) for case in memory_cases()]) + '\n')
  print(COST_HEADING.format(**FRACTION_OF_PEAK))
  if args.config is not None:
    return report_rows(args.config.experiment or 'config', runs_of(args.config))
  groups = [(str(number), runs_of(build.load_config(name)))
            for number, name in enumerate(REPORTS, 1)]
  groups.insert(1, ('1 (note: if trained)', {'alexnet_224': alexnet_config()}))
  return [row for report, runs in groups for row in report_rows(report, runs)]
