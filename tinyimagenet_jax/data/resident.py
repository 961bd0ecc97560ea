"""A split resident in device memory: batches gathered and augmented where the step runs.

`config.data.placement='device'` puts each decoded uint8 split once into the
memory of every device of the mesh (replicated: each device gathers its rows of
a batch locally, with no traffic between devices, and even Tiny ImageNet's
1.2 GB fits a 16 GB accelerator), so the host's only per-step work is launching
the call. Epoch e's order is `jax.random.permutation` of (seed, e), drawn on the
device; step s's batch is rows s * B .. (s + 1) * B - 1 of its epoch's order, so
a resumed run reads the batches an uninterrupted one would. 'auto' picks the
device when the splits fit `data.device_memory_fraction` of one device's memory
(host RAM for the CPU backend) on every process and every configured augmentation
has a device op. In a run of several JAX processes each process puts the split on
its own devices only and gathers its devices' rows of each batch there.
"""

from collections.abc import Callable, Sequence
import os

import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyimagenet_jax.config import is_number, one_of, require
from tinyimagenet_jax.data import decoded_cache
from tinyimagenet_jax.data import device_ops
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.errors import ConfigError

PLACEMENTS = ('auto', 'device', 'host')
READ_THREADS = 4


@flax.struct.dataclass
class ResidentSplit:
  """A split's decoded uint8 images (N, H, W, C) and int32 labels (N,), on the devices."""

  images: jax.Array
  labels: jax.Array


def validate_placement(data: ml_collections.ConfigDict) -> None:
  """ConfigError for an unknown placement or a memory fraction outside (0, 1]."""
  one_of('data.placement', data.placement, PLACEMENTS)
  require(is_number(data.device_memory_fraction) and 0 < data.device_memory_fraction <= 1,
          'data.device_memory_fraction', data.device_memory_fraction,
          'a fraction of one device\'s memory in (0, 1], e.g. 0.3')


def split_bytes(source: Sequence) -> int:
  """Device bytes of a split held as uint8 images and int32 labels."""
  return len(source) * (int(np.prod(sources.image_shape(source))) + 4)


def device_memory(device: jax.Device) -> int:
  """Bytes one device can hold: its allocator's limit, or the host's RAM for the CPU."""
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def resolve_placement(config: ml_collections.ConfigDict, splits: Sequence[Sequence]) -> str:
  """'device' or 'host' for `config.data.placement` and the splits a run keeps resident."""
  data = config.data
  missing = device_ops.unsupported(config)
  if data.placement == 'device' and missing:
    raise ConfigError(f'config.data.placement=device, but {", ".join(missing)} has no device'
                      ' path yet; use --config.data.placement=host.')
  if data.placement != 'auto':
    return data.placement
  needed = sum(split_bytes(split) for split in splits)
  fits = needed <= data.device_memory_fraction * device_memory(jax.local_devices()[0])
  return 'device' if every_process(fits) and not missing else 'host'


def every_process(answer: bool) -> bool:
  """Whether `answer` holds on every process of the run: processes whose devices differ
  in memory must still take one path, or each would wait for the other's collectives."""
  if jax.process_count() == 1:
    return answer
  return bool(np.all(multihost_utils.process_allgather(np.asarray(answer))))


def host_arrays(source: Sequence) -> tuple[np.ndarray, np.ndarray]:
  """Every record of `source` in order as (uint8 images, int32 labels): whole arrays where
  the source holds them (in memory, the decoded cache, subsets and relabellings of those),
  else record by record with reader threads (0.7 s for a 1,437-record subset of the digits,
  against milliseconds)."""
  if isinstance(source, sources.ArraySource):
    return np.asarray(source.images, np.uint8), np.asarray(source.labels, np.int32)
  if isinstance(source, decoded_cache.DecodedSource):
    return decoded_cache.all_images(source), np.asarray(source.labels, np.int32)
  if isinstance(source, sources.SubsetSource):
    images, labels = host_arrays(source.parent)
    labels = labels[source.indices]
    if source.relabel is not None:
      labels = np.asarray(source.relabel, np.int32)[labels]
    return images[source.indices], labels
  return records_as_arrays(source)


def records_as_arrays(source: Sequence) -> tuple[np.ndarray, np.ndarray]:
  """Every record of `source` in order as (uint8 images, int32 labels), read with threads."""
  images = np.empty((len(source), *sources.image_shape(source)), np.uint8)
  labels = np.empty(len(source), np.int32)
  for index, record in enumerate(decoded_cache.threaded_records(source, READ_THREADS)):
    images[index], labels[index] = record['image'], record['label']
  return images, labels


def put_resident(source: Sequence, sharding: jax.sharding.Sharding) -> ResidentSplit:
  """`source` decoded into device memory with `sharding` (replicated over the mesh): each
  process puts its copy on its own devices only."""
  images, labels = host_arrays(source)
  return ResidentSplit(jax.make_array_from_process_local_data(sharding, images),
                       jax.make_array_from_process_local_data(sharding, labels))


def epoch_order(seed: int, epoch: jax.Array, count: int) -> jax.Array:
  """The order of the `count` examples in (0-based) epoch `epoch`: a permutation drawn
  from (seed, epoch) alone."""
  return jax.random.permutation(jax.random.fold_in(jax.random.key(seed), epoch), count)


def batch_key(seed: int | jax.Array, step: jax.Array) -> jax.Array:
  """The augmentation randomness of global step `step` (0-based), the same for every member."""
  return jax.random.fold_in(jax.random.key(seed ^ 0x5EED), step)


def training_batch(make_batch: Callable, batch_size: int,
                   constrain: Callable = lambda batch: batch) -> Callable:
  """`batch(data, order, position, step, seed)`: the batch at rows position * B .. of
  `order`, gathered from `data` and made by `make_batch` with `batch_key(seed, step)`, put in
  the mesh's batch sharding by `constrain`."""

  def batch(data: ResidentSplit, order: jax.Array, position: jax.Array, step: jax.Array,
            seed: jax.Array) -> dict:
    rows = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
    return constrain(make_batch(batch_key(seed, step), data.images[rows], data.labels[rows]))

  return batch


def one_step_stacked(step_fn: Callable) -> Callable:
  """`step_fn(state, batch)` whose metrics come stacked on a leading axis of one step."""

  def step(state, batch: dict):
    state, metrics = step_fn(state, batch)
    return state, jax.tree.map(lambda value: value[None], metrics)

  return step


def train_call(step_fn: Callable, make_batch: Callable, batch_size: int,
               constrain: Callable = lambda batch: batch, unroll: bool = False) -> Callable:
  """`call(state, data, order, position, first_step, seed, count)`: `count` training steps
  in one call (a `lax.scan` when count > 1, fully unrolled with `unroll`), step i on
  `training_batch` position + i with `batch_key(seed, first_step + i)`; returns (state,
  per-step metrics stacked on a leading axis). `seed` (a uint32 scalar) is an argument, so
  runs that differ only in their seed share one program. `constrain` puts a batch in the
  mesh's batch sharding.
  """
  batch = training_batch(make_batch, batch_size, constrain)

  def call(state, data: ResidentSplit, order: jax.Array, position: jax.Array,
           first_step: jax.Array, seed: jax.Array, count: int):
    def one_step(state, offset):
      return step_fn(state, batch(data, order, position + offset, first_step + offset, seed))

    if count == 1:  # no loop: XLA:CPU runs a step about 3x slower inside one
      return one_step_stacked(one_step)(state, 0)
    return jax.lax.scan(one_step, state, jnp.arange(count), unroll=unroll)

  return call


class BatchThenStep:
  """A train call of one step (`train_call`'s signature, count 1) as two programs: the
  `training_batch` (with compiler options of its own) then the step (`one_step_stacked`).
  On XLA:CPU, YNNPACK's elementwise fusion speeds the model's step but made the batch's
  pixel arithmetic 10x slower (`device_ops.batch_apart`)."""

  def __init__(self, batch: Callable, step: Callable):
    self.batch, self.step = batch, step  # programs.Program each

  def compile(self, state, data: ResidentSplit, order: jax.Array, position, first_step, seed,
              count: int) -> Callable:
    """`(state, data, order, position, first_step, seed) -> (state, metrics)`, both programs
    compiled."""
    if count != 1:
      raise ValueError(f'a batch program and a step program make one step a call, not {count}')
    batch = self.batch.compile(data, order, position, first_step, seed)
    step = self.step.compile(state, batch.out_info)
    return lambda state, data, order, position, first_step, seed: step(
        state, batch(data, order, position, first_step, seed))

  def __call__(self, state, data: ResidentSplit, order: jax.Array, position, first_step, seed,
               count: int):
    """One step, compiled when needed."""
    return self.compile(state, data, order, position, first_step, seed, count)(
        state, data, order, position, first_step, seed)


def seed_argument(seed: int | Sequence[int]) -> np.ndarray:
  """A seed (or several) as a program's argument, not a constant traced into it, so runs
  that differ only in their seed share one program: uint32, for which `jax.random.key`
  gives the key it gives for the Python int, for every seed in [0, 2**32)."""
  return np.asarray(seed, np.uint32)


def batch_count(data: ResidentSplit, batch_size: int) -> int:
  """How many batches of `batch_size` cover a resident split (the last one padded)."""
  return -(-int(data.labels.shape[0]) // batch_size)


def eval_batch(make_batch: Callable, batch_size: int) -> Callable:
  """`batch(data, index)`: batch `index` of a resident split, gathered and preprocessed on
  the device, its rows past the split's end padded and masked out. The evaluator's step
  (the host path's, one program for every split) runs on it."""

  def batch(data: ResidentSplit, index: jax.Array) -> dict:
    rows = index * batch_size + jnp.arange(batch_size)
    real = rows < data.labels.shape[0]
    rows = jnp.where(real, rows, 0)
    return {**make_batch(data.images[rows], data.labels[rows]), 'mask': real}

  return batch
