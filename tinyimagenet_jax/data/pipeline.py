"""grain pipelines: an endless shuffled training stream and an exact eval pass.

The training stream is a random-access grain `MapDataset` whose element `s` is
the batch for global step `s`: each epoch is a fresh seeded permutation, cut
into whole batches (the remainder is dropped per epoch, never straddled), and
each record's augmentation randomness is a function of (seed, position). So a
run resumed at step `s` reads exactly the batches an uninterrupted run would.
"""

from collections.abc import Callable, Iterator, Sequence
import functools

import grain
import ml_collections
import numpy as np


def train_dataset(
    source: Sequence, transform: Callable, batch_size: int, seed: int,
    batch_transform: Callable | None = None,
) -> grain.MapDataset:
  """Endless stream of training batches; element `s` is the batch of step `s`.

  `batch_transform(batch, rng)` (mixup, cutmix) runs on each whole batch.
  """
  batches = (
      grain.MapDataset.source(source)
      .shuffle(seed=seed)
      .random_map(transform, seed=seed + 1)
      .batch(batch_size, drop_remainder=True)
  )
  if batch_transform is not None:
    batches = batches.random_map(batch_transform, seed=seed + 2)
  return batches.repeat()


def pad_batch(batch: dict, size: int) -> dict:
  """Zero-pads every array to `size` rows and adds `mask` (True = real row)."""
  count = len(batch['label'])
  padded = {
      key: np.concatenate([value, np.zeros((size - count,) + value.shape[1:], value.dtype)])
      for key, value in batch.items()
  }
  padded['mask'] = np.arange(size) < count
  return padded


def eval_dataset(source: Sequence, transform: Callable, batch_size: int) -> grain.MapDataset:
  """One pass over `source` in order; the last batch is padded and masked."""
  return (
      grain.MapDataset.source(source)
      .map(transform)
      .batch(batch_size, drop_remainder=False)
      .map(functools.partial(pad_batch, size=batch_size))
  )


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
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data.num_workers))
  return iter(stream)
