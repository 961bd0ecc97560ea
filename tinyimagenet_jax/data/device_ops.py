"""The preprocessing and augmentation of `transforms` and `batch_ops` as batched jax.numpy ops.

They run inside a jitted train step on the accelerator, on a batch gathered
from a device-resident dataset, so no pixel crosses the host each step. Every
random op is split in two: `sample_<op>(key, batch_size, <options>...)` draws
its parameters with `jax.random` (arrays with a leading batch axis, each
example its own draw, from the distributions the host ops draw from), and
`<op>(images, params)` moves or changes the pixels: pure, batched, static
shapes (a size the shapes depend on, like a crop's, is a static argument).
The batch ops draw once per batch: `sample_batch_op` gives the op, lambda and
cutmix box centre, and `mixup` / `cutmix(batch, params)` apply them. Given
the same parameters, each op gives the host op's pixels
(`tests/test_device_ops.py` checks each against it).

Images are (B, H, W, C): uint8 as gathered, float32 in [0, 1] once an op
needs arithmetic, as on the host: the pixel-moving ops (crops, pad-crop,
flip, translate) keep the dtype, the others return float32. The composed
functions, `make_train_batch(config)` and `make_eval_batch(config)`, run the
host's `Preprocess` order: resize_shorter -> crop -> the augmentations in
`transforms.AUGMENTATIONS` order -> to_float -> normalize, then the batch op
(mixup / cutmix, partner = the reversed batch, one lambda per batch).
`unsupported(config)` names any configured augmentation that has no device
op here, so a caller can fall back to the host pipeline.

Speed on XLA:CPU: every pixel move is a gather of per-example source rows and
columns (`take_pixels`), and uint8 pixels become the model input by a lookup in
a 256-entry table per channel made by the host's own to_float and normalize
(`input_table`, `look_up`: exact). XLA fuses the batch's gather from the
resident split, the moves and the lookup into one loop over the output, about
3x the images/s of jnp.pad + vmap(dynamic_slice) + where + float arithmetic
(issue 14, `python -m tinyimagenet_jax.bench --what=device_input`).
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tinyimagenet_jax.data import batch_ops as host_batch_ops
from tinyimagenet_jax.data import transforms

Array = jax.Array
# (key, images) -> images: one configured augmentation, randomness included.
DeviceAugmentation = Callable[[Array, Array], Array]
# (key, batch) -> batch: one configured batch op (mixup / cutmix).
DeviceBatchOp = Callable[[Array, dict], dict]


def to_float(images: Array) -> Array:
  """Pixels as float32 in [0, 1]: uint8 times float32(1/255), exactly as the host scales."""
  if images.dtype == jnp.float32:
    return images
  return images.astype(jnp.float32) * jnp.float32(1 / 255)


def normalize(images: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
  """Per-channel (images - mean) / std."""
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def input_table(channels: int, mean: Sequence[float] = (), std: Sequence[float] = ()
                ) -> np.ndarray:
  """(256, C) float32: each uint8 value's model input per channel (to_float, then normalize
  if `mean`), computed by the host's own ops, so a lookup gives exactly the host's pixels."""
  values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
  values = transforms.to_float(values)
  return transforms.normalize(values, mean, std) if mean else values


def look_up(images: Array, table: np.ndarray) -> Array:
  """uint8 images (B, H, W, C) through a per-channel `input_table`: one gather, which XLA
  fuses with the pixel moves before it."""
  channels = jnp.arange(table.shape[1])
  return jnp.asarray(table).at[images, channels].get(mode='promise_in_bounds')


# Resizing and cropping (AlexNet-style preprocessing, config.data).


def resize(images: Array, height: int, width: int) -> Array:
  """Bilinear resize to height x width with the host's weights (PIL BILINEAR), clipped to [0, 1].

  The weights are constants of the static shapes; HIGHEST precision keeps the
  matmuls float32 on GPU/TPU too (their default would round to bf16/tf32).
  """
  images = to_float(images)
  rows = transforms.linear_resize_weights(images.shape[1], height)
  columns = transforms.linear_resize_weights(images.shape[2], width)
  highest = lax.Precision.HIGHEST
  resized = jnp.einsum('oh,bhwc->bowc', rows, images, precision=highest)
  resized = jnp.einsum('pw,bowc->bopc', columns, resized, precision=highest)
  return jnp.clip(resized, 0, 1)


def resize_shorter(images: Array, size: int) -> Array:
  """Bilinear resize so the shorter side is `size`, the host's `shorter_side_shape` rounding."""
  return resize(images, *transforms.shorter_side_shape(*images.shape[1:3], size))


def crop_margins(height: int, width: int, size: int) -> np.ndarray:
  """(spare rows, spare columns) around a size x size crop; the host's DataError if too big."""
  return transforms.crop_margins(np.empty((height, width, 0), np.uint8), size)


def center_crop(images: Array, size: int) -> Array:
  """The central size x size window of each image; an odd margin's extra line is below/right."""
  top, left = crop_margins(*images.shape[1:3], size) // 2
  return images[:, top:top + size, left:left + size]


def sample_crop(key: Array, batch_size: int, height: int, width: int, size: int) -> Array:
  """(B, 2) int32 (top, left) of a size x size window, each uniform over every position."""
  margins = crop_margins(height, width, size)
  return jax.random.randint(key, (batch_size, 2), 0, jnp.asarray(margins + 1, jnp.int32))


def take_pixels(images: Array, rows: Array, columns: Array) -> Array:
  """Image b's pixels at source rows[b] x columns[b], (B, h) and (B, w) int32 indices inside
  the image: the (B, h, w, C) images. Every pixel move is one of these gathers, which XLA
  fuses with the batch's gather from the resident split and with `finish`'s table."""
  batch = jnp.arange(images.shape[0])[:, None, None]
  return jnp.asarray(images).at[batch, rows[:, :, None], columns[:, None, :]].get(
      mode='promise_in_bounds')


def crop(images: Array, offsets: Array, height: int, width: int) -> Array:
  """The height x width window of each image at its (top, left) in `offsets`, (B, 2)."""
  return take_pixels(images, offsets[:, :1] + jnp.arange(height),
                     offsets[:, 1:] + jnp.arange(width))


# Geometric augmentations.


def sample_flip(key: Array, batch_size: int, prob: float) -> Array:
  """(B,) bool: which images to mirror, each Bernoulli(prob) (the host's rng.random() < prob)."""
  return jax.random.uniform(key, (batch_size,)) < prob


def flip(images: Array, flips: Array) -> Array:
  """Mirrors left-right the images whose entry of `flips` (B,) is True."""
  batch, height, width = images.shape[:3]
  columns = jnp.arange(width)
  return take_pixels(images, jnp.broadcast_to(jnp.arange(height), (batch, height)),
                     jnp.where(jnp.asarray(flips)[:, None], width - 1 - columns, columns))


def sample_pad_crop(key: Array, batch_size: int, pad: int) -> Array:
  """(B, 2) int32 (top, left) in the padded image, each uniform over 0..2 * pad."""
  return jax.random.randint(key, (batch_size, 2), 0, 2 * pad + 1)


def pad_crop(images: Array, offsets: Array, pad: int) -> Array:
  """Zero-pads `pad` pixels on each side, then crops the original size back at `offsets`:
  each output pixel reads its shifted source pixel, or zero where that falls in the padding."""
  height, width = images.shape[1:3]
  rows = offsets[:, :1] - pad + jnp.arange(height)
  columns = offsets[:, 1:] - pad + jnp.arange(width)
  inside = (((rows >= 0) & (rows < height))[:, :, None]
            & ((columns >= 0) & (columns < width))[:, None, :])
  pixels = take_pixels(images, jnp.clip(rows, 0, height - 1), jnp.clip(columns, 0, width - 1))
  return jnp.where(inside[..., None], pixels, jnp.zeros((), images.dtype))


def translate_limits(height: int, width: int, fraction: float) -> np.ndarray:
  """The largest (dy, dx) shifts, as the host truncates fraction * size."""
  return (np.array([height, width]) * fraction).astype(int)


def sample_translate(
    key: Array, batch_size: int, fraction: float, height: int, width: int
) -> Array:
  """(B, 2) int32 (dy, dx), each uniform over the whole pixels -limit..limit (both included)."""
  limits = jnp.asarray(translate_limits(height, width, fraction), jnp.int32)
  return jax.random.randint(key, (batch_size, 2), -limits, limits + 1)


def translate(images: Array, shifts: Array) -> Array:
  """Moves each image's content (dy, dx) = shifts[b] down/right; vacated pixels repeat the edge."""
  height, width = images.shape[1:3]
  return take_pixels(images, jnp.clip(jnp.arange(height) - shifts[:, :1], 0, height - 1),
                     jnp.clip(jnp.arange(width) - shifts[:, 1:], 0, width - 1))


def bilinear_sample(image: Array, rows: Array, columns: Array) -> Array:
  """One float32 HxWxC image at the points (rows, columns), bilinear, edge-filled (host order)."""
  height, width, channels = image.shape
  pixels = image.reshape(height * width, channels)
  top, left = jnp.floor(rows), jnp.floor(columns)
  down = (rows - top).reshape(-1, 1)
  right = (columns - left).reshape(-1, 1)
  top_rows, bottom_rows = (jnp.clip(top + step, 0, height - 1).astype(jnp.int32).ravel() * width
                           for step in (0, 1))
  left_columns, right_columns = (jnp.clip(left + step, 0, width - 1).astype(jnp.int32).ravel()
                                 for step in (0, 1))
  upper = pixels[top_rows + left_columns]
  upper = upper + (pixels[top_rows + right_columns] - upper) * right
  lower = pixels[bottom_rows + left_columns]
  lower = lower + (pixels[bottom_rows + right_columns] - lower) * right
  upper = upper + (lower - upper) * down
  return upper.reshape(rows.shape + (channels,))


def sample_rotate(key: Array, batch_size: int, degrees: float) -> Array:
  """(B,) float32 angles in degrees, each uniform in [-degrees, degrees]."""
  return jax.random.uniform(key, (batch_size,), minval=-degrees, maxval=degrees)


def apart_on_cpu(op: Callable[[Array, Any], Array], acts: Callable[[Any], Array],
                 images: Array, params: Any) -> Array:
  """`op(images, params)`; on XLA:CPU behind a conditional, taken when `acts(params)`, else
  `to_float(images)` (which `op` must give exactly when it does not act). XLA otherwise
  fuses the gathers that made `images` (the batch's rows, pad-crop, flip) into each of the
  op's several reads of a pixel: 256 Tiny ImageNet images took 30 ms to rotate instead of
  3.5 ms, and a sharpness 99 ms instead of 11 (WORKSPACE.md, "Augmentations kept apart on
  XLA:CPU"). A conditional is a boundary fusion does not cross, so the images are made once.
  Other backends run `op` directly: a conditional can cost them a wait for its predicate."""
  def apart(images, params):
    return lax.cond(acts(params), op, lambda images, _: to_float(images), images, params)

  return lax.platform_dependent(images, params, cpu=apart, default=op)


def rotate(images: Array, angles: Array) -> Array:
  """Rotates each image counterclockwise by angles[b] degrees about its centre, bilinear,
  edge-filled, float32: the host `rotate` geometry (float32 coordinates, not float64).
  Kept `apart_on_cpu` (rotating by 0 degrees gives `to_float(images)` exactly)."""
  return apart_on_cpu(rotate_sampled, lambda angles: jnp.any(angles != 0), images, angles)


def rotate_sampled(images: Array, angles: Array) -> Array:
  """`rotate`'s pixels: each output pixel samples its position turned back about the centre."""
  images = to_float(images)
  height, width = images.shape[1:3]
  rows = jnp.arange(height, dtype=jnp.float32)[:, None] - (height - 1) / 2
  columns = jnp.arange(width, dtype=jnp.float32)[None, :] - (width - 1) / 2

  def turn(image, angle):
    radians = jnp.deg2rad(angle)
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    return bilinear_sample(image, cos * rows + sin * columns + (height - 1) / 2,
                           cos * columns - sin * rows + (width - 1) / 2)

  return jax.vmap(turn)(images, angles)


# Photometric augmentations: torchvision's float-image definitions, as the host.


def per_image(factors: Array) -> Array:
  """(B,) factors shaped to broadcast against (B, H, W, C) images."""
  return factors[:, None, None, None]


def grey(images: Array) -> Array:
  """The (B, H, W, 1) luma of RGB images (ITU-R 601-2); 1-channel images as they are."""
  if images.shape[-1] == 1:
    return images
  return jnp.einsum('bhwc,c->bhw', images, transforms.LUMA_WEIGHTS,
                    precision=lax.Precision.HIGHEST)[..., None]


def blend(images: Array, degenerate: Array | float, factors: Array) -> Array:
  """factor * image + (1 - factor) * degenerate per image, clipped to [0, 1]."""
  factors = per_image(factors)
  return jnp.clip(factors * images + (1 - factors) * degenerate, 0, 1)


def adjust_brightness(images: Array, factors: Array) -> Array:
  """Scales every pixel of image b by factors[b] (a blend with black)."""
  return blend(to_float(images), 0.0, factors)


def adjust_contrast(images: Array, factors: Array) -> Array:
  """Blends each image with its own mean grey level by factors[b]."""
  images = to_float(images)
  return blend(images, grey(images).mean(axis=(1, 2, 3), keepdims=True), factors)


def adjust_saturation(images: Array, factors: Array) -> Array:
  """Blends each image with its greyscale by factors[b]; 1-channel images are unchanged."""
  images = to_float(images)
  return images if images.shape[-1] == 1 else blend(images, grey(images), factors)


def smooth(images: Array) -> Array:
  """The 3x3 SMOOTH filter on interior pixels, border pixels kept (host order of the sum)."""
  height, width = images.shape[1:3]
  terms = [weight * images[:, dy:height - 2 + dy, dx:width - 2 + dx]
           for (dy, dx), weight in np.ndenumerate(transforms.SMOOTH_KERNEL)]
  return images.at[:, 1:-1, 1:-1].set(functools.reduce(jnp.add, terms))


def adjust_sharpness(images: Array, factors: Array) -> Array:
  """Blends each image with its smoothed image by factors[b]: 0 smooths, above 1 sharpens."""
  images = to_float(images)
  return blend(images, smooth(images), factors)


def sample_contrast(key: Array, batch_size: int, factor_range: tuple[float, float]) -> Array:
  """(B,) float32 contrast factors, each uniform in factor_range = (lo, hi)."""
  lo, hi = factor_range
  return jax.random.uniform(key, (batch_size,), minval=lo, maxval=hi)


def jitter_ranges(brightness: float, contrast: float, saturation: float) -> np.ndarray:
  """(3, 2) [lo, hi] of the brightness, contrast and saturation factors: [max(0, 1 - x), 1 + x]."""
  return np.array([[max(0.0, 1 - x), 1 + x] for x in (brightness, contrast, saturation)],
                  np.float32)


def sample_color_jitter(
    key: Array, batch_size: int, brightness: float, contrast: float, saturation: float
) -> dict:
  """{'factors': (B, 3) float32 uniform in each jitter range, 'order': (B, 3) int32 a uniform
  random permutation of (brightness, contrast, saturation) per image}, as the host draws them."""
  factor_key, order_key = jax.random.split(key)
  ranges = jitter_ranges(brightness, contrast, saturation)
  factors = jax.random.uniform(factor_key, (batch_size, 3), minval=ranges[:, 0],
                               maxval=ranges[:, 1])
  orders = jax.random.permutation(
      order_key, jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32), (batch_size, 3)), axis=1,
      independent=True)
  return {'factors': factors, 'order': orders}


def color_jitter(images: Array, params: dict) -> Array:
  """ColorJitter without hue: per image, brightness, contrast and saturation in its own order.

  Each of the three steps computes all three adjustments and keeps the one
  that image's order names (static shapes; the adjustments are cheap).
  """
  images = to_float(images)
  adjustments = (adjust_brightness, adjust_contrast, adjust_saturation)
  factors, order = params['factors'], params['order']
  for step in range(len(adjustments)):
    index = per_image(order[:, step])
    candidates = [adjust(images, factors[:, i]) for i, adjust in enumerate(adjustments)]
    images = jnp.where(index == 0, candidates[0],
                       jnp.where(index == 1, candidates[1], candidates[2]))
  return images


def sample_sharpness(key: Array, batch_size: int, factor: float, prob: float) -> dict:
  """{'apply': (B,) bool, each Bernoulli(prob), 'factor': (B,) float32 the sharpness factor}."""
  return {'apply': jax.random.uniform(key, (batch_size,)) < prob,
          'factor': jnp.full((batch_size,), factor, jnp.float32)}


def sharpness(images: Array, params: dict) -> Array:
  """adjust_sharpness by params['factor'] on the images params['apply'] picks; float32 out.
  Kept `apart_on_cpu`: its 3x3 filter reads each pixel nine times."""
  return apart_on_cpu(sharpen_picked, lambda params: jnp.any(params['apply']), images, params)


def sharpen_picked(images: Array, params: dict) -> Array:
  """`sharpness`'s pixels: the picked images sharpened, the others as they are."""
  images = to_float(images)
  return jnp.where(per_image(params['apply']),
                   adjust_sharpness(images, params['factor']), images)


# config.augment field -> (its value -> (key, images) -> images), mirroring
# transforms.AUGMENTATIONS; make_train_batch runs them in that host registry's order.


def augment_pad_crop(key: Array, images: Array, pad: int) -> Array:
  """pad_crop with its own random offsets."""
  return pad_crop(images, sample_pad_crop(key, images.shape[0], pad), pad)


def augment_flip(key: Array, images: Array, prob: float) -> Array:
  """flip with its own random choices."""
  return flip(images, sample_flip(key, images.shape[0], prob))


def augment_translate(key: Array, images: Array, fraction: float) -> Array:
  """translate with its own random shifts."""
  return translate(images, sample_translate(key, images.shape[0], fraction, *images.shape[1:3]))


def augment_rotate(key: Array, images: Array, degrees: float) -> Array:
  """rotate with its own random angles."""
  return rotate(images, sample_rotate(key, images.shape[0], degrees))


def augment_contrast(key: Array, images: Array, factor_range: tuple[float, float]) -> Array:
  """adjust_contrast with its own random factors."""
  return adjust_contrast(images, sample_contrast(key, images.shape[0], factor_range))


def augment_color_jitter(
    key: Array, images: Array, strengths: tuple[float, float, float]
) -> Array:
  """color_jitter with its own random factors and orders."""
  return color_jitter(images, sample_color_jitter(key, images.shape[0], *strengths))


def augment_sharpness(key: Array, images: Array, factor: float, prob: float) -> Array:
  """sharpness with its own random choices."""
  return sharpness(images, sample_sharpness(key, images.shape[0], factor, prob))


DEVICE_AUGMENTATIONS: dict[str, Callable[..., DeviceAugmentation]] = {
    'pad_crop': lambda pad: functools.partial(augment_pad_crop, pad=int(pad)),
    'flip_prob': lambda prob: functools.partial(augment_flip, prob=float(prob)),
    'translate': lambda fraction: functools.partial(augment_translate, fraction=float(fraction)),
    'rotate_degrees': lambda degrees: functools.partial(augment_rotate, degrees=float(degrees)),
    'contrast': lambda lo_hi: functools.partial(
        augment_contrast, factor_range=(float(lo_hi[0]), float(lo_hi[1]))),
    'color_jitter': lambda strengths: functools.partial(
        augment_color_jitter, strengths=tuple(float(x) for x in strengths)),
    'sharpness': lambda factor_prob: functools.partial(
        augment_sharpness, factor=float(factor_prob[0]), prob=float(factor_prob[1])),
}


# Batch ops: mixup and cutmix with the partner B-1-i, one lambda per batch.


def partner(array: Array) -> Array:
  """Each row's partner along the batch axis: row i gets row B-1-i."""
  return array[::-1]


def with_mix(batch: dict, images: Array, weight: Array) -> dict:
  """`batch` with its mixed `images`, the partners' labels and the own-label `weight`."""
  labels = batch['label']
  return {**batch,
          'image': images,
          'mix_label': partner(labels).astype(jnp.int32),
          'mix_weight': jnp.full(labels.shape, weight, jnp.float32)}


@jax.jit
def beta_sampler(key: Array, alpha: Array) -> Array:
  """Beta(alpha, alpha) as float32, compiled once for every float32 alpha."""
  return jax.random.beta(key, alpha, alpha).astype(jnp.float32)


def sample_beta(key: Array, alpha: Array | float) -> Array:
  """A float32 lambda ~ Beta(alpha, alpha); alpha is traced, so one compiled sampler
  (a gamma rejection loop, seconds to compile on CPU) serves every alpha and op."""
  return beta_sampler(key, jnp.asarray(alpha, jnp.float32))


def sample_box_centre(key: Array, height: int, width: int) -> Array:
  """(2,) int32 (y, x) of a cutmix box centre, uniform over the pixels."""
  return jax.random.randint(key, (2,), 0, jnp.array([height, width]))


def sample_mixup(key: Array, alpha: float) -> dict:
  """{'lam': the batch's own-image weight ~ Beta(alpha, alpha)}."""
  return {'lam': sample_beta(key, alpha)}


def mixup(batch: dict, params: dict) -> dict:
  """image = lam * image + (1 - lam) * partner, for float32 batch['image']."""
  images, weight = batch['image'], params['lam']
  return with_mix(batch, weight * images + (1 - weight) * partner(images), weight)


def sample_cutmix(key: Array, alpha: float, height: int, width: int) -> dict:
  """{'lam': ~ Beta(alpha, alpha), 'centre': (2,) int32 box centre uniform over the pixels}."""
  lam_key, centre_key = jax.random.split(key)
  return {'lam': sample_beta(lam_key, alpha),
          'centre': sample_box_centre(centre_key, height, width)}


def cutmix_box(height: int, width: int, params: dict) -> tuple[Array, Array, Array, Array]:
  """(top, bottom, left, right) of the host's box: area 1 - lam, the image's aspect, centred at
  params['centre'], side rounded half to even (Python's round), clipped to the image."""
  side = jnp.sqrt(1 - params['lam'])
  box_height = jnp.round(height * side).astype(jnp.int32)
  box_width = jnp.round(width * side).astype(jnp.int32)
  top = params['centre'][0] - box_height // 2
  left = params['centre'][1] - box_width // 2
  return (jnp.clip(top, 0, height), jnp.clip(top + box_height, 0, height),
          jnp.clip(left, 0, width), jnp.clip(left + box_width, 0, width))


def cutmix(batch: dict, params: dict) -> dict:
  """Pastes the partner's pixels inside the box; weight = the fraction of own pixels left.

  The weight can be one float32 ulp off the host's correctly rounded one: XLA
  multiplies by the rounded reciprocal of the constant pixel count.
  """
  images = batch['image']
  height, width = images.shape[1:3]
  top, bottom, left, right = cutmix_box(height, width, params)
  rows, columns = jnp.arange(height), jnp.arange(width)
  inside = (((rows >= top) & (rows < bottom))[:, None]
            & ((columns >= left) & (columns < right))[None, :])
  mixed = jnp.where(inside[None, :, :, None], partner(images), images)
  area = height * width
  weight = (area - (bottom - top) * (right - left)).astype(jnp.float32) / jnp.float32(area)
  return with_mix(batch, mixed, weight)


# config.augment field -> (batch, params) -> batch, mirroring batch_ops.BATCH_OPS; the
# params are sample_batch_op's (mixup reads 'lam', cutmix 'lam' and 'centre').
DEVICE_BATCH_OPS: dict[str, Callable[[dict, dict], dict]] = {
    'mixup_alpha': mixup,
    'cutmix_alpha': cutmix,
}


def sample_batch_op(key: Array, alphas: Sequence[float], height: int, width: int) -> dict:
  """{'op': index of the configured op, uniform over them (the host's one_of), 'lam':
  ~ Beta(alphas[op], alphas[op]), 'centre': a cutmix box centre}: one Beta draw per batch."""
  op_key, lam_key, centre_key = jax.random.split(key, 3)
  op = jax.random.randint(op_key, (), 0, len(alphas))
  return {'op': op,
          'lam': sample_beta(lam_key, jnp.asarray(alphas, jnp.float32)[op]),
          'centre': sample_box_centre(centre_key, height, width)}


def batch_op(batch: dict, params: dict, ops: Sequence[Callable[[dict, dict], dict]]) -> dict:
  """ops[params['op']] on the whole batch."""
  if len(ops) == 1:
    return ops[0](batch, params)
  return lax.switch(params['op'], list(ops), batch, params)


def batch_op_names(config: ml_collections.ConfigDict) -> list[str]:
  """The configured batch ops, in the host's BATCH_OPS order."""
  return [name for name in host_batch_ops.BATCH_OPS if config.augment[name]]


def make_batch_op(config: ml_collections.ConfigDict) -> DeviceBatchOp | None:
  """fn(key, batch) -> batch: mixup and/or cutmix of `config.augment` (with both, each batch
  gets one at random, as the host), or None when both are off."""
  names = batch_op_names(config)
  if not names:
    return None
  alphas = [float(config.augment[name]) for name in names]
  ops = [DEVICE_BATCH_OPS[name] for name in names]

  def apply(key: Array, batch: dict) -> dict:
    params = sample_batch_op(key, alphas, *batch['image'].shape[1:3])
    return batch_op(batch, params, ops)

  return apply


# Composition.


def unsupported(config: ml_collections.ConfigDict) -> list[str]:
  """The configured augmentations (host registries' names) without a device op here, in order."""
  host = list(transforms.AUGMENTATIONS) + list(host_batch_ops.BATCH_OPS)
  device = set(DEVICE_AUGMENTATIONS) | set(DEVICE_BATCH_OPS)
  return [name for name in host if config.augment[name] and name not in device]


# The augmentations that compute pixel values rather than only move pixels.
PIXEL_ARITHMETIC = ('rotate_degrees', 'contrast', 'color_jitter', 'sharpness')
# XLA:CPU compiler options for a batch made apart from its step: no YNNPACK fusion at all
# (`tuning.FAST_CPU_FLAGS` turns it on for the step's dots, elementwise ops and reductions).
# Its elementwise part materialised each of the pixel arithmetic's intermediate arrays between
# the gathers; with only that part off the batch was as fast (4.4 ms against 4.1 ms).
BATCH_APART_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def batch_apart(config: ml_collections.ConfigDict) -> bool:
  """Whether the device path makes each training batch in a program of its own, compiled
  with BATCH_APART_OPTIONS, before the step's: on XLA:CPU when the augmentation computes
  pixels. In one program with the step, tiny64's batch (flip, pad-crop, rotation) took 44 ms
  of a 330 ms step, apart 5 ms (WORKSPACE.md, "Augmentations kept apart on XLA:CPU")."""
  return jax.default_backend() == 'cpu' and any(config.augment[name] for name in PIXEL_ARITHMETIC)


# Each random stage draws from fold_in(key, its index here), so switching one
# augmentation on or off leaves every other stage's randomness as it was.
# The order of the ops is the host registries' (AUGMENTATIONS, BATCH_OPS).
STREAMS = ('crop', *transforms.AUGMENTATIONS, 'batch_op')


def stream(key: Array, name: str) -> Array:
  """The key of one random stage of the train batch."""
  return jax.random.fold_in(key, STREAMS.index(name))


def sized(config: ml_collections.ConfigDict, images: Array) -> Array:
  """resize_shorter, if configured (float32 out, as the host)."""
  size = int(config.data.resize_shorter)
  return resize_shorter(images, size) if size else images


def finish(config: ml_collections.ConfigDict, images: Array, labels: Array) -> dict:
  """to_float, normalize if configured (uint8 pixels: one `look_up`), and the batch dict with
  int32 labels."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  if images.dtype == jnp.uint8:
    images = look_up(images, input_table(images.shape[-1], mean, std))
  else:
    images = normalize(to_float(images), mean, std) if mean else to_float(images)
  return {'image': images, 'label': labels.astype(jnp.int32)}


def make_train_batch(
    config: ml_collections.ConfigDict,
) -> Callable[[Array, Array, Array], dict]:
  """fn(key, images_uint8 (B, H, W, C), labels (B,)) -> the training batch, augmented on device.

  The host's train `Preprocess` and batch transform: resize -> random crop ->
  augmentations in AUGMENTATIONS order -> to_float -> normalize -> mixup/cutmix
  ('mix_label' and 'mix_weight' added when one is on). Pure and jit-able.
  """
  missing = unsupported(config)
  if missing:
    raise ValueError(f'no device op for config.augment {missing}; use the host pipeline.')
  crop_size = int(config.data.crop_size)
  augmentations = [(name, DEVICE_AUGMENTATIONS[name](config.augment[name]))
                   for name in transforms.AUGMENTATIONS if config.augment[name]]
  batch_op = make_batch_op(config)

  def train_batch(key: Array, images: Array, labels: Array) -> dict:
    images = sized(config, images)
    if crop_size:
      offsets = sample_crop(stream(key, 'crop'), images.shape[0], *images.shape[1:3], crop_size)
      images = crop(images, offsets, crop_size, crop_size)
    for name, augment in augmentations:
      images = augment(stream(key, name), images)
    batch = finish(config, images, labels)
    return batch_op(stream(key, 'batch_op'), batch) if batch_op else batch

  return train_batch


def make_eval_batch(config: ml_collections.ConfigDict) -> Callable[[Array, Array], dict]:
  """fn(images_uint8, labels) -> the evaluation batch: resize -> central crop -> normalize."""
  crop_size = int(config.data.crop_size)

  def eval_batch(images: Array, labels: Array) -> dict:
    images = sized(config, images)
    if crop_size:
      images = center_crop(images, crop_size)
    return finish(config, images, labels)

  return eval_batch
