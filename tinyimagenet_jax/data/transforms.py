"""Numpy preprocessing and augmentation: small pure functions of (image, rng).

Images are HxWxC: uint8 as decoded, float32 in [0, 1] once an op needs
arithmetic. Ops that only move pixels (crops, pad-crop, flip, translate) keep
the dtype, so they run on the 4x smaller uint8 image; the others convert with
`to_float` and return float32 in [0, 1]. `Preprocess` runs, in this order:
resize_shorter (if `config.data.resize_shorter`) -> a square crop (if
`config.data.crop_size`: random for training, central for evaluation) -> the
augmentations (training only) -> to_float -> normalize. Augmentations are switched on by the `config.augment` fields
(a zero value or an empty tuple means off) and always run in the order of
`AUGMENTATIONS`. The composed transforms are picklable dataclasses holding
functools.partial objects, so grain can ship them to worker processes.
`validate_preprocess` checks those config fields before anything runs.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools

import ml_collections
import numpy as np

from tinyimagenet_jax import tuning
from tinyimagenet_jax.config import is_number, numbers, require
from tinyimagenet_jax.errors import ConfigError, DataError

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# ITU-R 601-2 luma, as PIL's convert('L') and torchvision's rgb_to_grayscale.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
# PIL's ImageFilter.SMOOTH, the 'degenerate' image of PIL/torchvision sharpness.
SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13


def to_float(image: np.ndarray) -> np.ndarray:
  """Pixels as float32 in [0, 1]: uint8 scaled by 1/255, float32 (already converted) as it is."""
  if image.dtype == np.float32:
    return image
  return image.astype(np.float32) * np.float32(1 / 255)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Per-channel (image - mean) / std."""
  return (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


# Resizing and cropping (AlexNet-style preprocessing, config.data).


def shorter_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(height, width) with the shorter side `size`, the longer scaled to keep the aspect.

  The longer side is rounded half up, in exact integer arithmetic: 64x48 -> 341x256.
  """
  short, long = sorted((height, width))
  long = (2 * long * size + short) // (2 * short)
  return (size, long) if height <= width else (long, size)


def linear_resize_weights(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) bilinear weights on pixel centres, as PIL's BILINEAR resize.

  When shrinking, the triangle filter widens by the scale factor (antialiasing).
  """
  scale = in_size / out_size
  support = max(scale, 1.0)
  centres = (np.arange(out_size) + 0.5) * scale
  distance = (np.arange(in_size) + 0.5 - centres[:, None]) / support
  weights = np.maximum(0, 1 - np.abs(distance))
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize to height x width; clipped to [0, 1] against float rounding.

  Its first call in a process caps numpy's BLAS there at one thread
  (`tuning.single_threaded_blas`), grain's worker processes included.
  """
  tuning.single_threaded_blas()
  rows = linear_resize_weights(image.shape[0], height)
  columns = linear_resize_weights(image.shape[1], width)
  resized = rows @ np.moveaxis(image, -1, 0) @ columns.T  # C x height x width
  return np.clip(np.moveaxis(resized, 0, -1), 0, 1)


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize so the shorter side is `size`, keeping the aspect ratio (AlexNet: 256)."""
  return resize(image, *shorter_side_shape(*image.shape[:2], size))


def crop_margins(image: np.ndarray, size: int) -> np.ndarray:
  """(spare rows, spare columns) around a size x size crop; DataError if it does not fit."""
  height, width = image.shape[:2]
  if size > min(height, width):
    raise DataError(
        f'a {height}x{width} image is smaller than config.data.crop_size={size};'
        f' set config.data.resize_shorter >= {size} or a smaller crop.')
  return np.array([height - size, width - size])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central size x size window (evaluation); an odd margin puts its extra line below/right."""
  top, left = crop_margins(image, size) // 2
  return image[top:top + size, left:left + size]


def random_crop(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
  """A size x size window at a uniformly random position (training crops)."""
  top, left = rng.integers(0, crop_margins(image, size) + 1)
  return image[top:top + size, left:left + size]


# Geometric augmentations.


def random_flip(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
  """Mirrors left-right with probability `prob`."""
  return image[:, ::-1] if rng.random() < prob else image


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
  """Zero-pads `pad` pixels on each side, then crops the original size back."""
  height, width, channels = image.shape
  padded = np.zeros((height + 2 * pad, width + 2 * pad, channels), image.dtype)
  padded[pad:pad + height, pad:pad + width] = image
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  return padded[top:top + height, left:left + width]


def translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Moves the content `dy` pixels down and `dx` right; vacated pixels repeat the nearest edge."""
  height, width = image.shape[:2]
  rows = np.clip(np.arange(height) - dy, 0, height - 1)
  columns = np.clip(np.arange(width) - dx, 0, width - 1)
  return image[rows[:, None], columns]


def random_translate(image: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
  """Shifts by whole pixels, uniform up to `fraction` of the height/width each way, edge-filled.

  Like Keras' height/width_shift_range with fill_mode='nearest', but without
  sub-pixel shifts, so pixel values are moved and never interpolated.
  """
  limits = (np.array(image.shape[:2]) * fraction).astype(int)
  dy, dx = rng.integers(-limits, limits + 1)
  return translate(image, dy, dx)


def bilinear_sample(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
  """`image` (float32 HxWxC) at the points (rows, columns), bilinear; a point outside takes
  the nearest edge pixels. One gather per corner over all channels at once."""
  height, width, channels = image.shape
  pixels = image.reshape(height * width, channels)
  top, left = np.floor(rows), np.floor(columns)
  down = (rows - top).astype(np.float32).reshape(-1, 1)
  right = (columns - left).astype(np.float32).reshape(-1, 1)
  top_rows, bottom_rows = (np.clip(top + step, 0, height - 1).astype(np.intp).ravel() * width
                           for step in (0, 1))
  left_columns, right_columns = (np.clip(left + step, 0, width - 1).astype(np.intp).ravel()
                                 for step in (0, 1))
  upper = pixels.take(top_rows + left_columns, axis=0)
  upper += (pixels.take(top_rows + right_columns, axis=0) - upper) * right
  lower = pixels.take(bottom_rows + left_columns, axis=0)
  lower += (pixels.take(bottom_rows + right_columns, axis=0) - lower) * right
  upper += (lower - upper) * down
  return upper.reshape(rows.shape + (channels,))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Rotates counterclockwise by `degrees` about the centre (bilinear), edge-filled, same size.

  The same image as scipy.ndimage.rotate(order=1, mode='nearest') (to float32
  rounding), several times faster: each output pixel samples its position
  turned back about the centre.
  """
  image = to_float(image)
  height, width = image.shape[:2]
  cos, sin = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  rows = np.arange(height)[:, None] - (height - 1) / 2
  columns = np.arange(width)[None, :] - (width - 1) / 2
  return bilinear_sample(image, cos * rows + sin * columns + (height - 1) / 2,
                         cos * columns - sin * rows + (width - 1) / 2)


def random_rotate(image: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
  """Rotates by an angle uniform in [-degrees, degrees] (torchvision RandomRotation)."""
  return rotate(image, rng.uniform(-degrees, degrees))


# Photometric augmentations: torchvision's float-image definitions of PIL's ImageEnhance.


def grey(image: np.ndarray) -> np.ndarray:
  """The HxWx1 luma of an RGB image (ITU-R 601-2); a 1-channel image as it is."""
  if image.shape[-1] == 1:
    return image
  return np.einsum('...c,c->...', image, LUMA_WEIGHTS)[..., None]  # no BLAS threads


def blend(image: np.ndarray, degenerate: np.ndarray | float, factor: float) -> np.ndarray:
  """factor * image + (1 - factor) * degenerate, clipped to [0, 1]; factor 1 keeps `image`."""
  return np.clip(factor * image + (1 - factor) * degenerate, 0, 1).astype(np.float32, copy=False)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """Scales every pixel by `factor` (a blend with black)."""
  return blend(to_float(image), 0.0, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends with the image's mean grey level: 0 gives a flat grey image, 1 the image."""
  image = to_float(image)
  return blend(image, grey(image).mean(), factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends with the greyscale image: 0 gives grey, 1 the image; 1-channel images are unchanged."""
  image = to_float(image)
  return image if image.shape[-1] == 1 else blend(image, grey(image), factor)


def smooth(image: np.ndarray) -> np.ndarray:
  """The 3x3 SMOOTH filter on interior pixels; border pixels are kept, as PIL and torchvision do."""
  height, width = image.shape[:2]
  smoothed = image.copy()
  smoothed[1:-1, 1:-1] = sum(
      weight * image[dy:height - 2 + dy, dx:width - 2 + dx]
      for (dy, dx), weight in np.ndenumerate(SMOOTH_KERNEL))
  return smoothed


def adjust_sharpness(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends with the smoothed image: 0 smooths, 1 is the image, above 1 sharpens."""
  image = to_float(image)
  return blend(image, smooth(image), factor)


def random_contrast(
    image: np.ndarray, rng: np.random.Generator, factor_range: tuple[float, float]
) -> np.ndarray:
  """adjust_contrast by a factor uniform in `factor_range` (lo, hi), e.g. (0.7, 1.3)."""
  return adjust_contrast(image, rng.uniform(*factor_range))


def color_jitter(
    image: np.ndarray, rng: np.random.Generator,
    brightness: float, contrast: float, saturation: float,
) -> np.ndarray:
  """torchvision ColorJitter(brightness, contrast, saturation) without hue.

  Each factor is uniform in [max(0, 1 - x), 1 + x] (exactly 1, a no-op, for
  x = 0), and the three adjustments run in a random order.
  """
  adjustments = (adjust_brightness, adjust_contrast, adjust_saturation)
  factors = [rng.uniform(max(0.0, 1 - x), 1 + x) for x in (brightness, contrast, saturation)]
  for index in rng.permutation(len(adjustments)):
    image = adjustments[index](image, factors[index])
  return image


def random_sharpness(
    image: np.ndarray, rng: np.random.Generator, factor: float, prob: float
) -> np.ndarray:
  """adjust_sharpness by `factor` with probability `prob` (torchvision RandomAdjustSharpness)."""
  return adjust_sharpness(image, factor) if rng.random() < prob else image


# config.augment field -> (its value -> an augmentation op). Applied in this
# order: geometric ops first (pad-crop, flip, translate, rotate), then
# photometric ones (contrast, colour jitter, sharpness) on the final geometry.
AUGMENTATIONS: dict[str, Callable[..., Augmentation]] = {
    'pad_crop': lambda pad: functools.partial(pad_and_random_crop, pad=int(pad)),
    'flip_prob': lambda prob: functools.partial(random_flip, prob=float(prob)),
    'translate': lambda fraction: functools.partial(random_translate, fraction=float(fraction)),
    'rotate_degrees': lambda degrees: functools.partial(random_rotate, degrees=float(degrees)),
    'contrast': lambda lo_hi: functools.partial(
        random_contrast, factor_range=(float(lo_hi[0]), float(lo_hi[1]))),
    'color_jitter': lambda strengths: functools.partial(
        color_jitter, brightness=float(strengths[0]), contrast=float(strengths[1]),
        saturation=float(strengths[2])),
    'sharpness': lambda factor_prob: functools.partial(
        random_sharpness, factor=float(factor_prob[0]), prob=float(factor_prob[1])),
}


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Record -> model input: scale, resize and crop, augment (train only), normalise."""

  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()
  augmentations: tuple[Augmentation, ...] = ()
  resize_shorter: int = 0  # the shorter side after resizing; 0 keeps the decoded size
  crop_size: int = 0  # a square crop of this side; 0 does not crop
  random_crops: bool = False  # crop at random (training) rather than centrally (evaluation)

  def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The model input's shape for source images of `image_shape`, without running it."""
    height, width, channels = image_shape
    if self.resize_shorter:
      height, width = shorter_side_shape(height, width, self.resize_shorter)
    if self.crop_size:
      height = width = self.crop_size
    return (height, width, channels)

  def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
    image = record['image']
    if self.resize_shorter:
      image = resize_shorter(to_float(image), self.resize_shorter)
    if self.crop_size:
      image = (random_crop(image, rng, self.crop_size) if self.random_crops
               else center_crop(image, self.crop_size))
    for augment in self.augmentations:
      image = augment(image, rng)
    image = to_float(image)
    if self.mean:
      image = normalize(image, self.mean, self.std)
    return {'image': np.ascontiguousarray(image, np.float32),
            'label': np.int32(record['label'])}


def make_preprocess(config: ml_collections.ConfigDict) -> tuple[Preprocess, Preprocess]:
  """(train, eval) transforms from `config.data` and `config.augment`."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  sizes = {'resize_shorter': int(config.data.resize_shorter),
           'crop_size': int(config.data.crop_size)}
  augmentations = tuple(
      make(config.augment[name])
      for name, make in AUGMENTATIONS.items() if config.augment[name])
  return (Preprocess(mean, std, augmentations, random_crops=True, **sizes),
          Preprocess(mean, std, **sizes))


def validate_preprocess(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first crop or augmentation setting that would fail inside a data worker."""
  validate_crop(config.data)
  validate_augment(config.augment)


def validate_crop(data: ml_collections.ConfigDict) -> None:
  """resize_shorter and crop_size are pixel counts, and the crop fits in the resize."""
  for key in ('resize_shorter', 'crop_size'):
    value = data[key]
    require(is_number(value) and value >= 0 and int(value) == value, f'data.{key}', value,
            'a whole number of pixels, or 0 for off')
  if data.resize_shorter and data.crop_size > data.resize_shorter:
    raise ConfigError(
        f'config.data.crop_size={data.crop_size!r} must be at most'
        f' config.data.resize_shorter={data.resize_shorter!r}, the side it crops from.')


def validate_augment(augment: ml_collections.ConfigDict) -> None:
  """Every config.augment value that would otherwise fail inside a data worker."""
  require(0 <= augment.flip_prob <= 1, 'augment.flip_prob', augment.flip_prob,
          'a probability in [0, 1]')
  require(is_number(augment.translate) and 0 <= augment.translate < 1,
          'augment.translate', augment.translate,
          'a fraction of the image size in [0, 1), e.g. 0.1, or 0 for off')
  require(is_number(augment.rotate_degrees) and augment.rotate_degrees >= 0,
          'augment.rotate_degrees', augment.rotate_degrees,
          'a number of degrees >= 0, e.g. 15, or 0 for off')
  contrast = augment.contrast
  require(not contrast or (numbers(contrast, 2) and 0 < contrast[0] <= contrast[1]),
          'augment.contrast', contrast,
          '2 positive numbers (lo, hi) with lo <= hi, e.g. (0.7, 1.3), or () for off')
  jitter = augment.color_jitter
  require(not jitter or (numbers(jitter, 3) and min(jitter) >= 0),
          'augment.color_jitter', jitter,
          '3 numbers >= 0 (brightness, contrast, saturation), e.g. (0.1, 0.1, 0.1),'
          ' or () for off')
  sharpness = augment.sharpness
  require(not sharpness or (numbers(sharpness, 2) and sharpness[0] >= 0
                            and 0 <= sharpness[1] <= 1),
          'augment.sharpness', sharpness,
          '(factor, prob) with factor >= 0 and prob in [0, 1], e.g. (2.0, 0.1), or () for off')
  for key in ('mixup_alpha', 'cutmix_alpha'):
    require(is_number(augment[key]) and augment[key] >= 0, f'augment.{key}', augment[key],
            'a Beta(alpha, alpha) parameter >= 0, e.g. 0.2, or 0 for off')
