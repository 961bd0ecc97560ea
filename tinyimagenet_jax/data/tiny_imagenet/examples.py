"""Decoded images of a split: what the TFDS builder writes and the export summarises.

Images are decoded with PIL and converted to RGB (2,178 Tiny ImageNet JPEGs
are greyscale), so both see the same uint8 64x64x3 pixels. An image that does
not decode, or is not 64x64, goes to `Problems`.
"""

from collections.abc import Iterator, Sequence
import io

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from tinyimagenet_jax.data.tiny_imagenet.parsing import IMAGE_SIZE
from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.data.tiny_imagenet.selection import Entry

SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)


def decode(name: str, data: bytes, problems: Problems) -> np.ndarray | None:
  """The image in `data` as uint8 RGB, or None (reported) if it is not a 64x64 image."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      pixels = np.asarray(image.convert('RGB'))
  except UnidentifiedImageError:
    problems.bad(name, 'is not an image file')
    return None
  except (OSError, SyntaxError, ValueError) as error:
    problems.bad(name, f'cannot be decoded ({error})')
    return None
  if pixels.shape != SHAPE:
    problems.bad(name, f'is {pixels.shape[1]}x{pixels.shape[0]} pixels, expected'
                 f' {IMAGE_SIZE}x{IMAGE_SIZE}')
    return None
  return pixels


def read_images(archive, entries: Sequence[Entry],
                problems: Problems) -> Iterator[tuple[Entry, np.ndarray]]:
  """(entry, pixels) for each entry whose image decodes, in the archive's read order."""
  by_path = {e.path: e for e in entries}
  for name, data in archive.read_many(by_path):
    pixels = decode(name, data, problems)
    if pixels is not None:
      yield by_path[name], pixels
