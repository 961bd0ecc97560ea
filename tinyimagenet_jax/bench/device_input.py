"""The device path's figures: its input against other loaders, its step waits, steps per call.

`device_input`: images/s of CIFAR-10 training input (flip, pad-crop 4, normalise;
batch 128) on this machine's cores, alternated `--repeats` times in one process
(medians of `--batches` batches after `--warmup`), side by side:

    device      the project's device path: `resident.train_call` around a step that
                returns its batch, so one jitted call gathers the rows of an epoch's
                permutation from the resident uint8 split and runs `make_train_batch`
    jax sketch  a plain jitted JAX program of the same work: gather, jnp.pad, a
                per-example shift by vmap(dynamic_slice), flips by jnp.where, float,
                normalise
    torch       an airbench-style loader: the whole split one padded uint8 tensor, one
                random shift per batch, per-example flips, float, normalise (NCHW
                float32 out, torch's layout; one intra-op thread, TORCH_THREADS)
    grain       the project's host pipeline (`build.train_stream`), 2 worker processes,
                the pixels from the decoded cache

`device_step_waits`: `--batches` steps of the training loop's own `train.train_epoch`
with `train.DeviceCalls` (gather, augment and step in one call; on XLA:CPU, when the
augmentation computes pixels, a batch program then a step program), against as many
train steps on one cached device batch (the same model, batch and jitted step,
metrics read one step late as the loop does), alternated; the goal is a ratio of at
most 1.02. Alternated with them, the epoch's batches gathered and augmented alone
(`augment_seconds`): on a CPU that work shares the step's cores, so the last column
shows what is left over the step's and the augmentation's own math. Cases: cifar10
(conv4, batch 128) and tiny64 (tiny_m1, batch 256) from
`pipeline_vs_tfdata`, tiny64_folder the same from an image folder.

`steps_per_call`: lenet5 (batch 64) on 32x32 CIFAR-10: an epoch of `--batches`
steps through `train.train_epoch` on the host path (grain, one step a call) and on
the device path with S steps a call, S in STEPS_PER_CALL, each S once as the
project's `lax.scan` and once with that scan fully unrolled (`resident.train_call`'s
`unroll`: S copies of the step, no XLA while loop); each epoch's wall over `--batches` lone
steps (a step on a cached device batch, timed alone); goal 1.05. Each variant's
compile time (`DeviceCalls` compiling its call) is reported too.

`augment_apart`: milliseconds of one training batch made on the device for the reports'
augmentations that compute pixels (APART_CASES, random pixels, no --config), alternated:
as the device path makes it on XLA:CPU (`device_ops.batch_apart`), and without each of its
two measures (the conditional before the rotation and sharpness; the program of its own
compiled without YNNPACK's fusions).

Data locations come from --config: `data.root` is the image folder
(`<root>/train/<class>/*`: CIFAR-10, or Tiny ImageNet for tiny64_folder),
`data.data_dir` the TFDS folder for tiny64, `data.cache_dir` the decoded cache.
"""

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import functools
import itertools
import time
import unittest.mock

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyimagenet_jax import build, parallel, programs, steps, train
from tinyimagenet_jax.bench import common, pipeline_vs_tfdata
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import device_ops, resident, sources

# CIFAR-10's per-channel mean and standard deviation of the [0, 1] training pixels.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
GRAIN_WORKERS = 2
# torch's intra-op threads: a batch's ops are too small to split, and with 2 threads
# OpenMP's waiting collapsed the loader to about 2,500 images/s whenever another process
# (grain's workers) ran.
TORCH_THREADS = 1
WAIT_GOAL, CALL_GOAL = 1.02, 1.05
STEPS_PER_CALL = (4, 16)
LOOPS = ('scan', 'unrolled scan')


def input_config(root: str, cache_dir: str) -> ml_collections.ConfigDict:
  """CIFAR-10 JPEG files, flip + pad-crop 4, normalised, batch 128, decoded cache on."""
  config = pipeline_vs_tfdata.cifar10_config(ml_collections.ConfigDict({'root': root}))
  config.data.mean, config.data.std = CIFAR10_MEAN, CIFAR10_STD
  config.data.decoded_cache, config.data.cache_dir = True, cache_dir
  return config


def decoded_arrays(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """The training split's uint8 images and int32 labels, as the device path holds them."""
  return resident.host_arrays(sources.load(config.data, config.data.train_split))


# The contenders of `device_input`: each `batches(count)` makes `count` batches and
# returns the last once it exists.


def last_of(make: Callable[[int], object], number: int) -> object:
  """The last of `make(step)` for steps 0..number-1, each batch dropped once the next exists."""
  batch = None
  for step in range(number):
    batch = make(step)
  return batch


def device_batches(config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray
                   ) -> Callable[[int], object]:
  """The project's device path: gather + `make_train_batch` in one jitted call per batch."""
  batch_size, count = config.batch_size, len(labels)
  call = jax.jit(resident.train_call(lambda state, batch: (state, batch),
                                     device_ops.make_train_batch(config), batch_size),
                 static_argnums=6)
  data = resident.ResidentSplit(jax.device_put(images), jax.device_put(labels))
  order = jax.jit(resident.epoch_order, static_argnums=(0, 2))(config.seed, 0, count)
  per_epoch, seed = count // batch_size, resident.seed_argument(config.seed)
  return lambda number: jax.block_until_ready(last_of(
      lambda step: call(jnp.zeros(()), data, order, step % per_epoch, step, seed, 1)[1],
      number))


def sketch_batch(images: jax.Array, labels: jax.Array, key: jax.Array, rows: jax.Array,
                 pad: int, mean: tuple, std: tuple) -> tuple[jax.Array, jax.Array]:
  """The plain JAX way: gather, pad, shift each example by vmap(dynamic_slice), flip by
  where, then float and normalise."""
  height, width, channels = images.shape[1:]
  shift_key, flip_key = jax.random.split(key)
  padded = jnp.pad(images[rows], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(shift_key, (len(rows), 2), 0, 2 * pad + 1)
  shifted = jax.vmap(lambda image, offset: lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, channels)))(padded, offsets)
  flips = jax.random.uniform(flip_key, (len(rows),)) < 0.5
  flipped = jnp.where(flips[:, None, None, None], shifted[:, :, ::-1], shifted)
  pixels = flipped.astype(jnp.float32) / 255
  return (pixels - jnp.asarray(mean)) / jnp.asarray(std), labels[rows]


def sketch_batches(config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray
                   ) -> Callable[[int], object]:
  """`sketch_batch` jitted with its rows' slice of a permutation, one call per batch."""
  batch_size, count = config.batch_size, len(labels)
  pad, mean, std = int(config.augment.pad_crop), tuple(config.data.mean), tuple(config.data.std)
  make = jax.jit(lambda images, labels, order, step: sketch_batch(
      images, labels, jax.random.fold_in(jax.random.key(config.seed), step),
      lax.dynamic_slice_in_dim(order, (step % (count // batch_size)) * batch_size, batch_size),
      pad, mean, std))
  images, labels = jax.device_put(images), jax.device_put(labels)
  order = jax.random.permutation(jax.random.key(config.seed), count)

  return lambda number: jax.block_until_ready(last_of(
      lambda step: make(images, labels, order, step), number))


def torch_batches(config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray
                  ) -> Callable[[int], object]:
  """An airbench-style torch loader: the split padded once into one uint8 tensor; per batch
  its rows (index_select), one random shift for all of them, channels first, per-example
  flips, float and normalise as one multiply-add per channel (NCHW float32 out)."""
  import torch  # pylint: disable=g-import-not-at-top

  pad, batch_size = int(config.augment.pad_crop), config.batch_size
  height, width = images.shape[1:3]
  padded = torch.from_numpy(np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0))))
  targets = torch.from_numpy(labels.astype(np.int64))
  mean, std = torch.tensor(config.data.mean), torch.tensor(config.data.std)
  scale, offset = (1 / (255 * std))[:, None, None], (-mean / std)[:, None, None]
  generator = torch.Generator().manual_seed(config.seed)
  order = torch.randperm(len(labels), generator=generator)
  per_epoch = len(labels) // batch_size

  def one_batch(step: int) -> tuple:
    rows = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
    top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    pixels = padded.index_select(0, rows)[:, top:top + height, left:left + width]
    pixels = pixels.permute(0, 3, 1, 2).contiguous()
    flips = torch.rand(batch_size, generator=generator) < 0.5
    pixels = torch.where(flips[:, None, None, None], pixels.flip(3), pixels)
    return pixels.float().mul_(scale).add_(offset), targets[rows]

  def batches(number: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
      return last_of(one_batch, number)
    finally:
      torch.set_num_threads(threads)

  return batches


def grain_batches(stream: Iterator[dict]) -> Callable[[int], object]:
  """`number` batches of an open grain stream."""
  return lambda number: last_of(lambda step: next(stream), number)


def timed(batches: Callable[[int], object], count: int, warmup: int) -> float:
  """Seconds for `count` batches after `warmup` untimed ones."""
  if warmup:
    batches(warmup)
  return common.seconds(lambda: batches(count))


def device_input(args: common.Args) -> list[dict]:
  """Images/s of the device path's input and augmentation against a plain JAX sketch, an
  airbench-style torch loader and grain with 2 workers, alternated; ratios to grain."""
  locations = args.require_config().data
  config = input_config(locations.root, locations.cache_dir)
  images, labels = decoded_arrays(config)
  grain_config = config.copy_and_resolve_references()
  grain_config.data.num_workers = GRAIN_WORKERS
  with contextlib.closing(pipeline_vs_tfdata.grain_stream(
      grain_config, sources.load(config.data, config.data.train_split))) as stream:
    contenders = {'device': device_batches(config, images, labels),
                  'jax sketch': sketch_batches(config, images, labels),
                  'torch': torch_batches(config, images, labels),
                  f'grain, {GRAIN_WORKERS} workers': grain_batches(stream)}
    times = pipeline_vs_tfdata.alternate_timed(
        {name: lambda batches=batches: timed(batches, args.batches, args.warmup)
         for name, batches in contenders.items()}, args.repeats)
  rates = {name: args.batches * config.batch_size / common.median(seconds)
           for name, seconds in times.items()}
  grain_rate = rates[f'grain, {GRAIN_WORKERS} workers']
  return [{'loader': name, 'batch_size': config.batch_size, 'batches': args.batches,
           'images_per_second': round(rate), 'vs_grain': round(rate / grain_rate, 1),
           'vs_torch': round(rate / rates['torch'], 2), 'device': jax.devices()[0].platform}
          for name, rate in rates.items()]


# The device path's step waits and steps per call.


def device_run(config: ml_collections.ConfigDict, steps_per_epoch: int) -> build.Run:
  """`config` built on the device path with `steps_per_epoch` steps an epoch."""
  config = config.copy_and_resolve_references()
  config.data.placement, config.steps_per_epoch = 'device', steps_per_epoch
  return build.build(config)


def cached_batch(run: build.Run) -> dict:
  """One training batch made on the device from the split's first rows, as a host batch."""
  data, size = run.device.splits['train'], run.config.batch_size
  batch = device_ops.make_train_batch(run.config)(jax.random.key(0), data.images[:size],
                                                  data.labels[:size])
  return jax.device_get(batch)


class Turns:
  """The contenders of one run, sharing its (donated) state: epochs through
  `train.train_epoch` with some calls, and steps on one cached device batch."""

  def __init__(self, run: build.Run):
    self.run, self.state, self.epoch = run, run.state, 0
    host_batch = cached_batch(run)
    self.step = parallel.compile_step(run.train_step, self.state, host_batch, run.mesh)
    self.batch = parallel.put_batch(host_batch, run.mesh)

  def epoch_through(self, calls: train.HostCalls | train.DeviceCalls) -> float:
    """Seconds of one epoch of the loop's `train_epoch` with `calls` (its order drawn first,
    as the loop does)."""
    self.epoch += 1
    start = time.perf_counter()
    calls.start_epoch(self.epoch)
    self.state, _ = train.train_epoch(self.state, calls, 0, self.run.steps_per_epoch, [], None,
                                      pipeline_vs_tfdata.never_pause, None)
    return time.perf_counter() - start

  def cached_epoch(self) -> float:
    """Seconds of an epoch's steps on the cached device batch, metrics read one step late."""
    start = time.perf_counter()
    self.state = pipeline_vs_tfdata.cached_device_epoch(self.state, self.step, self.batch,
                                                        self.run.steps_per_epoch)
    return time.perf_counter() - start

  @functools.cached_property
  def augmented_batch(self) -> Callable[[int], jax.Array]:
    """`batch(step)`: the first rows of the resident training split gathered and augmented
    with step `step`'s key as the device path makes them (in the train call's program, or
    in a program of its own: `resident.BatchThenStep`), compiled by a first call."""
    path = self.run.device
    data, rows, seed = path.splits['train'], jnp.arange(len(path.splits['train'].labels)), 0
    if isinstance(path.train_call, resident.BatchThenStep):
      make = path.train_call.batch.compile(data, rows, 0, 0, resident.seed_argument(seed))
    else:
      make = jax.jit(resident.training_batch(device_ops.make_train_batch(self.run.config),
                                             self.run.config.batch_size))
    batch = lambda step: make(data, rows, 0, step, resident.seed_argument(seed))
    jax.block_until_ready(batch(0))
    return batch

  def augment_epoch(self) -> float:
    """Seconds of an epoch's batches gathered and augmented on the device alone (the device
    path's input work, which the cached steps do not do), each waited for."""
    batch = self.augmented_batch
    start = time.perf_counter()
    for step in range(self.run.steps_per_epoch):
      jax.block_until_ready(batch(step))
    return time.perf_counter() - start

  def lone_step(self) -> float:
    """Seconds of one step on the cached device batch, waited for alone."""
    start = time.perf_counter()
    self.state = jax.block_until_ready(self.step(self.state, self.batch))[0]
    return time.perf_counter() - start


DEVICE_CASES: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]] = {
    'cifar10': pipeline_vs_tfdata.cifar10_config,
    'tiny64': pipeline_vs_tfdata.tiny64_config,
    'tiny64_folder': lambda locations: image_folder(pipeline_vs_tfdata.tiny64_config(locations),
                                                    locations.root),
}


def image_folder(config: ml_collections.ConfigDict, root: str) -> ml_collections.ConfigDict:
  """`config` reading an image folder at `root` instead of its TFDS dataset."""
  config.data.name, config.data.root = 'image_folder', root
  return config


def device_cases(args: common.Args, names: tuple[str, ...]) -> dict[str, ml_collections.ConfigDict]:
  """The configs of the cases --models names (else `names`) whose data --config locates,
  reading the decoded cache when --config.data.cache_dir is given."""
  locations = args.require_config().data
  unknown = set(args.models) - set(DEVICE_CASES)
  if unknown:
    raise ValueError(f'no case {sorted(unknown)[0]!r}; the cases: {", ".join(DEVICE_CASES)}.')
  configs = {}
  for name in args.models or names:
    config = DEVICE_CASES[name](locations)
    if config.data.root if config.data.name == 'image_folder' else config.data.data_dir:
      config.data.decoded_cache, config.data.cache_dir = bool(locations.cache_dir), locations.cache_dir
      configs[name] = config
  return configs


def device_step_waits(args: common.Args) -> list[dict]:
  """Seconds of an epoch of `--batches` steps through the loop with DeviceCalls against as
  many steps on one cached device batch (medians of alternated turns), and their ratio."""
  rows = []
  for name, config in device_cases(args, ('cifar10', 'tiny64')).items():
    run = device_run(config, args.batches)
    turns = Turns(run)
    calls = train.DeviceCalls(run, turns.state)
    turns.epoch_through(calls)  # warms both programs
    turns.cached_epoch()
    times = pipeline_vs_tfdata.alternate_timed(
        {'device_path': lambda: turns.epoch_through(calls), 'cached': turns.cached_epoch,
         'augment': turns.augment_epoch}, args.repeats)
    loop, cached, augment = (common.median(times[name])
                             for name in ('device_path', 'cached', 'augment'))
    rows.append({'case': name, 'model': config.model.name, 'batch_size': config.batch_size,
                 'image_shape': list(run.device.splits['train'].images.shape[1:]),
                 'train_images': len(run.device.splits['train'].labels), 'steps': args.batches,
                 'steps_per_call': calls.steps_per_call,
                 'device_path_seconds': round(loop, 3), 'cached_seconds': round(cached, 3),
                 'device_path_over_cached': round(loop / cached, 3),
                 'within_2_percent': loop / cached <= WAIT_GOAL,
                 'augment_seconds': round(augment, 3),
                 'over_cached_plus_augment': round(loop / (cached + augment), 3)})
  return rows


def with_calls(run: build.Run, steps_per_call: int, loop: str) -> build.Run:
  """`run` whose device path makes `steps_per_call` steps a call by `loop` ('scan': the
  project's train call; 'unrolled scan': the same fully unrolled), jitted as `build` does."""
  path = dataclasses.replace(run.device, steps_per_call=steps_per_call)
  if loop == 'unrolled scan':
    everywhere = parallel.replicated(run.mesh)
    batches = parallel.batch_sharded(run.mesh)
    call = resident.train_call(
        steps.train_step, device_ops.make_train_batch(run.config), run.config.batch_size,
        lambda batch: lax.with_sharding_constraint(batch, batches), unroll=True)
    path = dataclasses.replace(path, train_call=programs.Program(jax.jit(
        call, static_argnums=6, donate_argnums=0, in_shardings=(everywhere,) * 6,
        out_shardings=(everywhere, everywhere)), 'unrolled_train_call', static_argnums=(6,)))
  return dataclasses.replace(run, device=path)


def lenet5_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """lenet5, batch 64, on 32x32 CIFAR-10 JPEGs with flip + pad-crop 4 (CIFAR-100's shapes but
  10 classes), decoded cache on if --config.data.cache_dir is given."""
  config = pipeline_vs_tfdata.cifar10_config(locations)
  config.model.name, config.batch_size = 'lenet5', 64
  config.data.decoded_cache, config.data.cache_dir = bool(locations.cache_dir), locations.cache_dir
  return config


def steps_per_call(args: common.Args) -> list[dict]:
  """An epoch's wall over `--batches` lone steps for lenet5 on the host path (one step a
  call) and the device path (1 and S steps a call, S by lax.scan or unrolled), alternated."""
  config = lenet5_config(args.require_config().data)
  run = device_run(config, args.batches)
  turns = Turns(run)
  contenders, compile_seconds = {}, {}
  with contextlib.closing(pipeline_vs_tfdata.grain_stream(
      run.config, sources.load(config.data, config.data.train_split))) as stream:
    host_calls = train.HostCalls(run, stream, turns.step)
    contenders['host, 1 a call'] = lambda: turns.epoch_through(host_calls)
    for size, loop in [(1, 'scan'), *itertools.product(STEPS_PER_CALL, LOOPS)]:
      name = f'device, {size} a call' + (f' ({loop})' if size > 1 else '')
      start = time.perf_counter()
      calls = train.DeviceCalls(with_calls(run, size, loop), turns.state)
      compile_seconds[name] = time.perf_counter() - start
      contenders[name] = lambda calls=calls: turns.epoch_through(calls)
    contenders['lone steps'] = lambda: sum(turns.lone_step() for _ in range(args.batches))
    for contender in contenders.values():  # warms every program and the stream
      contender()
    times = pipeline_vs_tfdata.alternate_timed(contenders, args.repeats)
  math = common.median(times['lone steps'])
  return [{'model': config.model.name, 'batch_size': config.batch_size, 'steps': args.batches,
           'contender': name, 'seconds': round(common.median(seconds), 3),
           'over_lone_steps': round(common.median(seconds) / math, 3),
           'within_5_percent': common.median(seconds) / math <= CALL_GOAL,
           'compile_seconds': round(compile_seconds.get(name, 0.0), 1)}
          for name, seconds in times.items()]


# The reports' device augmentations that read a pixel more than once, as (image size, batch,
# config.augment): tiny64's (fifth report, tiny_m1), tiny_models' (third) and the fourth
# report's transforms for CIFAR-100.
APART_CASES = {
    'tiny64': (64, 256, {'flip_prob': 0.5, 'pad_crop': 8, 'rotate_degrees': 15.0}),
    'tiny_models': (64, 128, {'flip_prob': 0.5, 'translate': 0.1, 'rotate_degrees': 15.0,
                              'contrast': (0.7, 1.3)}),
    'cifar100_transforms': (32, 128, {'flip_prob': 0.1, 'rotate_degrees': 20.0,
                                      'color_jitter': (0.1, 0.1, 0.1), 'sharpness': (2.0, 0.1)}),
}
APART_POOL = 2048  # resident images a case's batches are gathered from


def fused(op: Callable, acts: Callable, images: jax.Array, params) -> jax.Array:
  """`device_ops.apart_on_cpu` without its conditional: what XLA fuses when let."""
  del acts
  return op(images, params)


# augment_apart's variants: (the rotation's and sharpness' keeper, compiler options).
APART_VARIANTS = {
    'as_run': (device_ops.apart_on_cpu, device_ops.BATCH_APART_OPTIONS),
    'no_conditional': (fused, device_ops.BATCH_APART_OPTIONS),
    'with_step_flags': (device_ops.apart_on_cpu, None),
    'neither': (fused, None),
}


def augment_apart(args: common.Args) -> list[dict]:
  """Milliseconds of one training batch gathered and augmented on the device
  (`make_train_batch`, random pixels), alternated: as the device path makes it on XLA:CPU
  (`device_ops.batch_apart`: a program of its own, without YNNPACK's fusions, the
  rotation and sharpness behind `apart_on_cpu`'s conditional), without the conditional, with
  the step's flags (as in one program with the step), and with neither."""
  rows = []
  for name in args.models or APART_CASES:
    size, batch_size, augment = APART_CASES[name]
    config = base_config()
    config.batch_size = batch_size
    config.augment.update(augment)
    key = jax.random.key(0)
    images = jax.random.randint(key, (APART_POOL, size, size, 3), 0, 256).astype(jnp.uint8)
    labels = jnp.zeros((APART_POOL,), jnp.int32)
    picked = jax.random.permutation(key, APART_POOL)[:batch_size]
    batches = {}
    for variant, (keeper, options) in APART_VARIANTS.items():
      with unittest.mock.patch.object(device_ops, 'apart_on_cpu', keeper):
        make = device_ops.make_train_batch(config)
        batch = jax.jit(lambda key, images, labels, rows, make=make: make(
            key, images[rows], labels[rows])).lower(key, images, labels, picked).compile(
                compiler_options=options)  # traced and compiled under the patch
      batches[variant] = lambda key, batch=batch: batch(key, images, labels, picked)
    keys = [jax.random.fold_in(key, index) for index in range(args.batches)]
    times = common.alternate({variant: lambda fn=fn: jax.block_until_ready([fn(k) for k in keys])
                              for variant, fn in batches.items()}, args.repeats)
    ms = {variant: 1000 * common.median(times[variant]) / args.batches for variant in batches}
    rows.append({'case': name, 'image_size': size, 'batch_size': batch_size,
                 'augment': ', '.join(augment),
                 **{f'{variant}_ms': round(value, 2) for variant, value in ms.items()},
                 **{f'{variant}_over_as_run': round(ms[variant] / ms['as_run'], 2)
                    for variant in list(batches)[1:]}})
  return rows
