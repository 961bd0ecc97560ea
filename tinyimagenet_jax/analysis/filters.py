"""First-layer convolution filters as an image, as in the fifth report's Figure 4.

Each output filter is min-max normalised on its own to 0..255 (all its input
channels together, so colour balance is kept), shown in colour when it reads
RGB (3 input channels) and as the mean over input channels in grey otherwise.
Filters are tiled row-major with a 1-pixel black separator between tiles.
"""

import math

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from tinyimagenet_jax import atomic

SEPARATOR = 0  # the separator's pixel value
TITLE_PIXELS = 16  # the title's font size; its band is twice as high


def normalise_filter(weights: np.ndarray) -> np.ndarray:
  """`weights` scaled linearly to 0..255 uint8 (a constant filter is all 0)."""
  weights = np.asarray(weights, np.float64)
  low, span = weights.min(), np.ptp(weights)
  scaled = (weights - low) / span if span > 0 else np.zeros_like(weights)
  return np.round(scaled * 255).astype(np.uint8)


def filter_tiles(kernel: np.ndarray) -> np.ndarray:
  """(cout, kh, kw, 3) or (cout, kh, kw) uint8 tiles of a (kh, kw, cin, cout) kernel."""
  filters = np.moveaxis(np.asarray(kernel, np.float64), -1, 0)
  if filters.shape[-1] != 3:
    filters = filters.mean(axis=-1)
  return np.stack([normalise_filter(weights) for weights in filters])


def filter_grid(kernel: np.ndarray, columns: int | None = None) -> np.ndarray:
  """A uint8 image tiling every output filter of a (kh, kw, cin, cout) kernel.

  RGB (H, W, 3) when cin == 3, else grey (H, W); `columns` defaults to
  ceil(sqrt(cout)); H = rows * (kh + 1) - 1 and W = columns * (kw + 1) - 1.
  """
  tiles = filter_tiles(kernel)
  count, height, width = tiles.shape[:3]
  columns = columns or math.ceil(math.sqrt(count))
  rows = math.ceil(count / columns)
  grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1, *tiles.shape[3:]),
                 SEPARATOR, np.uint8)
  for index, tile in enumerate(tiles):
    top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
    grid[top:top + height, left:left + width] = tile
  return grid


def write_filter_image(kernel: np.ndarray, path: str, scale: int = 8,
                       columns: int | None = None, title: str = '',
                       min_width: int = 0) -> np.ndarray:
  """Saves filter_grid(kernel) as a PNG enlarged `scale` times (nearest neighbour; more when
  `min_width` pixels need it), under a band holding `title` if one is given; returns the
  grid."""
  grid = filter_grid(kernel, columns)
  scale = max(scale, math.ceil(min_width / grid.shape[1]))
  enlarged = Image.fromarray(grid).convert('RGB')
  enlarged = enlarged.resize((enlarged.width * scale, enlarged.height * scale),
                             Image.Resampling.NEAREST)
  image = enlarged
  if title:
    font = ImageFont.load_default(size=TITLE_PIXELS)
    image = Image.new('RGB', (enlarged.width, enlarged.height + 2 * TITLE_PIXELS), 'white')
    ImageDraw.Draw(image).text((enlarged.width // 2, TITLE_PIXELS), title, fill='black',
                               font=font, anchor='mm')
    image.paste(enlarged, (0, 2 * TITLE_PIXELS))
  with atomic.replaced_file(path) as temporary:
    image.save(temporary, format='PNG')
  return grid
