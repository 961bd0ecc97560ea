"""grain pipelines: an endless shuffled training stream and an exact eval pass.

The training stream is a random-access grain `MapDataset` whose element `s` is
the batch for global step `s`: each epoch is a fresh seeded permutation, cut
into whole batches (the remainder is dropped per epoch, never straddled), and
each record's augmentation randomness is a function of (seed, position). So a
run resumed at step `s` reads exactly the batches an uninterrupted run would.

With several JAX processes (`jax.distributed`), each reads only its own rows:
process p of n gets the contiguous rows p*b .. (p+1)*b - 1 (b = batch / n) of
every global batch, the rows `jax.make_array_from_process_local_data` puts on
its devices, so the global batch is the single-process one, row for row.
"""

from collections.abc import Callable, Iterator, Sequence
import functools

from absl import flags
import grain
import ml_collections
import numpy as np

from tinyimagenet_jax.errors import ConfigError


def process_batch_size(batch_size: int, process_count: int) -> int:
  """The rows of a global batch of `batch_size` that each of `process_count` processes reads."""
  if batch_size % process_count:
    raise ConfigError(
        f'a global batch of {batch_size} does not split over {process_count} processes; make'
        f' config.batch_size and config.eval_batch_size multiples of {process_count}.')
  return batch_size // process_count


def train_dataset(
    source: Sequence, transform: Callable, batch_size: int, seed: int,
    batch_transform: Callable | None = None, process_index: int = 0, process_count: int = 1,
) -> grain.MapDataset:
  """Endless stream of this process's rows of the training batches; element `s` is step `s`'s.

  `batch_transform(batch, rng)` (mixup, cutmix) runs on the rows of each batch
  this process reads (with several processes it mixes within those rows only).
  """
  rows = process_batch_size(batch_size, process_count)
  records = (
      grain.MapDataset.source(source)
      .shuffle(seed=seed)
      .random_map(transform, seed=seed + 1)
  )
  whole_batches = records[:len(records) // batch_size * batch_size]
  # Chunks of `rows` records: chunk s*n + p is process p's part of global batch s.
  batches = whole_batches.batch(rows)[process_index::process_count]
  if batch_transform is not None:
    batches = batches.random_map(batch_transform, seed=seed + 2)
  return batches.repeat()


def with_mask(record: dict, real: bool) -> dict:
  """`record` with `mask` (True for a real example, False for padding)."""
  return {**record, 'mask': np.bool_(real)}


def eval_dataset(source: Sequence, transform: Callable, batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """One pass over `source` in order, in global batches of `batch_size`, the last one
  padded with zeros and masked; this process's rows of each (every process gets as many)."""
  rows = process_batch_size(batch_size, process_count)
  records = grain.MapDataset.source(source).map(transform).map(
      functools.partial(with_mask, real=True))
  padding = -len(source) % batch_size
  if padding:
    blank = {key: np.zeros_like(value) for key, value in transform(source[0]).items()}
    records = grain.MapDataset.concatenate(
        [records, grain.MapDataset.source([with_mask(blank, False)]).repeat(padding)])
  return records.batch(rows)[process_index::process_count]  # as in `train_dataset`


def iterate(
    dataset: grain.MapDataset, data: ml_collections.ConfigDict, start: int = 0
) -> Iterator[dict]:
  """Reads `dataset` from element `start` with threads (and worker processes).

  An exception raised by a source or transform (such as the DataError of an
  unreadable image) comes out of `next` as itself: grain re-raises it from its
  threads, and from its worker processes after pickling, adding only a note.
  """
  stream = dataset[start:].to_iter_dataset(
      grain.ReadOptions(num_threads=data.num_threads,
                        prefetch_buffer_size=data.prefetch_batches))
  if data.num_workers:
    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
      flags.FLAGS.mark_as_parsed()
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data.num_workers))
  return iter(stream)
