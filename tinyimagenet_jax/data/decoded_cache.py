"""A decoded copy of a source on disk: pixels decoded once, read by every later epoch and run.

Decoding costs more than the augmentations of small images: about 150 us an
image for a CIFAR-10 JPEG file and 470 us for a Tiny ImageNet record (TFDS
parsing and PNG) on this machine's CPU, paid again every epoch. With
`config.data.decoded_cache`, a split is decoded once into
`<config.data.cache_dir>/<key>.npy` (uint8 N x H x W x C, beside it the labels
in `<key>.labels.npy`) and read memory-mapped: grain's worker processes share
the page cache instead of each holding a copy. Tiny ImageNet's 100,000 train
images are 1.2 GB decoded, CIFAR-10's 50,000 are 150 MB.

The key is a hash of the source's `fingerprint()`: a TFDS split's prepared
folder, or an image folder's paths, sizes and modification times, so a changed
folder gets a new cache. The images file is renamed into place last, so a build
interrupted by a crash leaves no cache that looks finished. Only sources of
one image size can be cached (resizing happens later, in the transforms).
"""

from collections.abc import Sequence
import dataclasses
import functools
import hashlib
import os
import pathlib

from absl import logging
import numpy as np

from tinyimagenet_jax import progress
from tinyimagenet_jax.errors import DataError

DEFAULT_CACHE_DIR = '~/.cache/tinyimagenet_jax/decoded'
# Bumped when the stored layout changes, so old caches are not read as new ones.
LAYOUT_VERSION = 'decoded-v1'
BUILD_THREADS = 4


@functools.lru_cache(maxsize=None)
def _open_images(path: str) -> np.ndarray:
  """The cached images at `path`, memory-mapped read-only (once per process)."""
  return np.load(path, mmap_mode='r')


@dataclasses.dataclass(frozen=True)
class DecodedSource:
  """`parent`'s records with their images read from the decoded cache at `path`."""

  parent: Sequence
  path: str
  labels: np.ndarray

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.parent.class_names

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    return {'image': np.array(_open_images(self.path)[index]), 'label': int(self.labels[index])}

  def name(self, index: int) -> str:
    """The parent's name of the example."""
    return self.parent.name(index)


def all_images(source: DecodedSource) -> np.ndarray:
  """Every cached image of `source` in order, read in one go."""
  return np.asarray(_open_images(source.path), np.uint8)


def cache_paths(source: Sequence, cache_dir: str) -> tuple[pathlib.Path, pathlib.Path]:
  """(images, labels) files of `source`'s cache in `cache_dir`, named by its fingerprint."""
  key = hashlib.sha256(f'{LAYOUT_VERSION}\n{source.fingerprint()}'.encode()).hexdigest()[:24]
  folder = pathlib.Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
  return folder / f'{key}.npy', folder / f'{key}.labels.npy'


def threaded_records(source: Sequence, threads: int):
  """Every record of `source` in order, read by `threads` grain reader threads. grain is
  imported here, not with the module: the device path's in-memory splits need none."""
  import grain  # pylint: disable=import-outside-toplevel
  return grain.MapDataset.source(source).to_iter_dataset(grain.ReadOptions(num_threads=threads))


def decode_all(source: Sequence, images_path: pathlib.Path, labels_path: pathlib.Path) -> None:
  """Decodes every record of `source` in order (reader threads, a progress bar) into the files.

  Both are written under names of this process's own and renamed into place,
  the images last: only a complete build is ever found, and processes building
  the same cache at once (several hosts of one run) do not write over each other.
  """
  shape = source[0]['image'].shape
  images_path.parent.mkdir(parents=True, exist_ok=True)
  partial_images, partial_labels = (path.with_name(f'{path.name}.{os.getpid()}.partial.npy')
                                    for path in (images_path, labels_path))
  images = np.lib.format.open_memmap(partial_images, 'w+', np.uint8, (len(source), *shape))
  labels = np.empty(len(source), np.int64)
  records = threaded_records(source, BUILD_THREADS)
  for index, record in enumerate(progress.bar(records, total=len(source), unit='img',
                                              desc=f'Decoding once into {images_path.name}')):
    if record['image'].shape != shape:
      partial_images.unlink()
      raise DataError(
          f'config.data.decoded_cache needs images of one size; record {index}'
          f' ({source.name(index)}) is {record["image"].shape}, the first {shape}. Turn the'
          ' cache off for this data.')
    images[index], labels[index] = record['image'], record['label']
  images.flush()
  del images
  np.save(partial_labels, labels)
  os.replace(partial_labels, labels_path)
  os.replace(partial_images, images_path)


def decoded(source: Sequence, cache_dir: str) -> Sequence:
  """`source` read from its decoded cache, decoding it into the cache first if needed.

  A source without a `fingerprint` (already in memory) is returned as it is.
  """
  if not hasattr(source, 'fingerprint'):
    logging.info('%s is already decoded in memory; config.data.decoded_cache has nothing to do.',
                 type(source).__name__)
    return source
  images_path, labels_path = cache_paths(source, cache_dir)
  if not images_path.exists():
    decode_all(source, images_path, labels_path)
  labels = np.load(labels_path)
  if len(labels) != len(source):
    raise DataError(f'the decoded cache {str(images_path)!r} holds {len(labels)} records, the'
                    f' source {len(source)}; delete the cache file to rebuild it.')
  return DecodedSource(source, str(images_path), labels)
