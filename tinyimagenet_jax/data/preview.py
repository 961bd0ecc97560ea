"""A PNG grid of one image under each augmentation, to check settings by eye.

    python -m tinyimagenet_jax.data.preview --image=photo.jpg --out=grid.png [--size=64] [--seed=0]

The first row is the third report's figure: the original, contrast 1.3 and
0.7, and a horizontal flip. Every later row is one op at a representative
setting: several random draws of it, or a few of its fixed settings. Each panel
is titled with the op and its parameters. Panels go through `Preprocess`, the
code path training uses.
"""

import functools
import os

from absl import flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from PIL import Image
from PIL import ImageOps

from tinyimagenet_jax import atomic
from tinyimagenet_jax import cli
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import DataError

DRAWS = 4  # random draws shown per random op
PANEL_INCHES = 2.0
DPI = 100


def augmented(op: transforms.Augmentation) -> transforms.Preprocess:
  """A Preprocess that applies just `op` (no resize, crop or normalisation)."""
  return transforms.Preprocess(augmentations=(op,))


def draws(title: str, transform: transforms.Preprocess, count: int = DRAWS) -> tuple:
  """`count` panels of the same random transform: one per draw."""
  return ((title, transform),) * count


# Rows of (title, transform) panels; panels of random ops each take a new draw.
PREVIEW_ROWS = (
    (('original', transforms.Preprocess()),
     ('contrast 1.3', augmented(functools.partial(
         transforms.random_contrast, factor_range=(1.3, 1.3)))),
     ('contrast 0.7', augmented(functools.partial(
         transforms.random_contrast, factor_range=(0.7, 0.7)))),
     ('horizontal flip', augmented(functools.partial(transforms.random_flip, prob=1.0)))),
    draws('rotate ±20°', augmented(functools.partial(transforms.random_rotate, degrees=20.0))),
    draws('translate ±0.15', augmented(functools.partial(
        transforms.random_translate, fraction=0.15))),
    draws('color jitter 0.1, 0.1, 0.1', augmented(functools.partial(
        transforms.color_jitter, brightness=0.1, contrast=0.1, saturation=0.1))),
    tuple((f'sharpness {factor:g}', augmented(functools.partial(
        transforms.random_sharpness, factor=factor, prob=1.0))) for factor in (0.0, 2.0, 4.0)),
    draws('pad 4 + crop', augmented(functools.partial(transforms.pad_and_random_crop, pad=4))),
    (('resize 256, centre crop 224', transforms.Preprocess(resize_shorter=256, crop_size=224)),
     *draws('resize 256, random crop 224', transforms.Preprocess(
         resize_shorter=256, crop_size=224, random_crops=True), DRAWS - 1)),
)


def preview_grid(image: np.ndarray, seed: int = 0) -> Figure:
  """`image` (uint8 HxWxC) under every panel of PREVIEW_ROWS, random draws seeded by `seed`."""
  rng = np.random.default_rng(seed)
  rows = len(PREVIEW_ROWS)
  columns = max(map(len, PREVIEW_ROWS))
  figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), dpi=DPI)
  FigureCanvasAgg(figure)
  record = {'image': image, 'label': 0}
  for row, row_axes in zip(PREVIEW_ROWS, figure.subplots(rows, columns, squeeze=False)):
    for column, axis in enumerate(row_axes):
      if column >= len(row):
        axis.remove()
        continue
      title, transform = row[column]
      shown = transform(record, rng)['image']
      axis.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap='gray', vmin=0, vmax=1)
      axis.set_title(title, fontsize=8)
      axis.axis('off')
  figure.tight_layout()
  return figure


def write_preview(image: np.ndarray, path: str, seed: int = 0) -> Figure:
  """Writes preview_grid(image, seed) as a PNG at `path` and returns the figure."""
  figure = preview_grid(image, seed)
  atomic.save_figure(figure, path)
  return figure


def load_image(path: str, size: int) -> np.ndarray:
  """An image file as uint8 RGB, fitted (resized and centre-cropped) to size x size if size > 0."""
  with Image.open(path) as file:
    image = file.convert('RGB')
  if size:
    image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
  return np.asarray(image)


_IMAGE = flags.DEFINE_string('image', None, 'The image file to preview (any format PIL reads).')
_OUT = flags.DEFINE_string('out', None, 'Where the PNG grid goes, e.g. grid.png.')
_SIZE = flags.DEFINE_integer(
    'size', 64, 'Fit the image to size x size first, as the dataset stores it'
    ' (Tiny ImageNet: 64, CIFAR: 32); 0 keeps its size.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random draws.')


def check_paths(image: str, out: str) -> None:
  """DataError, one line, unless `image` is a file and `out`'s folder exists."""
  if not os.path.isfile(image):
    raise DataError(f'--image={image} is not a file; give the image to preview.')
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise DataError(f'--out={out}: its folder {folder} does not exist; create it first.')


def main(argv: list[str]) -> None:
  del argv  # cli.parse_flags refused positional arguments
  check_paths(_IMAGE.value, _OUT.value)
  try:
    image = load_image(_IMAGE.value, _SIZE.value)
  except (OSError, SyntaxError, ValueError) as error:  # what PIL raises for a non-image
    raise DataError(f'--image={_IMAGE.value} cannot be read as an image'
                    f' ({type(error).__name__}); give a JPEG, PNG or other file PIL reads.'
                    ) from error
  write_preview(image, _OUT.value, _SEED.value)
  print(f'Wrote {_OUT.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['image', 'out'])
  cli.run(main)
