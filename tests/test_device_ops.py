"""Device ops give the host ops' pixels for the same parameters, and draw them as the host does.

Tolerances (absolute, pixels in [0, 1] unless normalised):
  exact      pixel moves (crops, pad-crop, flip, translate) on uint8, to_float,
             cutmix's pasted pixels, labels and mix labels;
  1e-7       mix_weight (one float32 ulp): XLA turns cutmix's division by the
             constant pixel count into a multiply by its rounded reciprocal;
  1e-6       float ops: resize, contrast, brightness, saturation, sharpness,
             colour jitter, normalize, mixup (float32 sums in another order);
  2e-5       rotate: the host's sample coordinates are float64, the device's
             float32 (ulp 4e-6 at 64 pixels), bilinear weights follow them;
  2e-4       the whole normalised train pipeline, every op on: rotate's 2e-5
             amplified by contrast, jitter, sharpness x2 and 1/std.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import batch_ops
from tinyimagenet_jax.data import device_ops
from tinyimagenet_jax.data import transforms

SHAPES = [(32, 32, 3), (64, 64, 3), (7, 9, 1), (8, 8, 1)]
DRAWS = 20_000
FLOAT, ROTATE, PIPELINE, WEIGHT = 1e-6, 2e-5, 2e-4, 1e-7


class Scripted:
  """A numpy Generator stand-in for the host ops: each method returns its next given draw,
  after checking it lies in the range the host asked for."""

  def __init__(self, **draws):
    self.draws = {name: list(values) for name, values in draws.items()}

  def next(self, method):
    return self.draws[method].pop(0)

  def left(self):
    return {name: values for name, values in self.draws.items() if values}

  def random(self):
    value = float(self.next('random'))
    assert 0 <= value < 1
    return value

  def uniform(self, low, high):
    value = float(self.next('uniform'))
    assert low <= value <= high
    return value

  def integers(self, low, high=None, size=None):
    if high is None:
      low, high = 0, low
    value = np.asarray(self.next('integers'), np.int64)
    assert np.all(low <= value) and np.all(value < high)
    if size is not None:
      assert value.shape == (size,)
    return value if value.ndim else int(value)

  def permutation(self, n):
    value = np.asarray(self.next('permutation'))
    assert sorted(value) == list(range(n))
    return value

  def beta(self, a, b):
    value = float(self.next('beta'))
    assert 0 <= value <= 1
    return value


def images(shape, batch=3, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch,) + shape, dtype=np.uint8)


def host(op, batch: np.ndarray, *per_image_args) -> np.ndarray:
  """The host op on each image, with its own arguments from per_image_args[...][i]."""
  return np.stack([op(image, *(args[i] for args in per_image_args))
                   for i, image in enumerate(batch)])


def key(seed=0):
  return jax.random.key(seed)


def full_config():
  """resize 36 -> crop 32, every augmentation and normalisation on."""
  config = base_config()
  config.data.resize_shorter = 36
  config.data.crop_size = 32
  config.data.mean = (0.5, 0.45, 0.4)
  config.data.std = (0.25, 0.2, 0.3)
  augment = config.augment
  augment.pad_crop = 4
  augment.flip_prob = 0.5
  augment.translate = 0.1
  augment.rotate_degrees = 15.0
  augment.contrast = (0.7, 1.3)
  augment.color_jitter = (0.2, 0.3, 0.4)
  augment.sharpness = (2.0, 0.5)
  augment.mixup_alpha = 0.2
  augment.cutmix_alpha = 1.0
  return config


# (1) The same parameters give the host's pixels.


@pytest.mark.parametrize('shape', SHAPES)
def test_to_float_and_normalize_match_the_host(shape):
  x = images(shape)
  floats = np.asarray(device_ops.to_float(jnp.asarray(x)))
  np.testing.assert_array_equal(floats, host(transforms.to_float, x))
  mean, std = (0.5, 0.4, 0.3)[:shape[-1]], (0.2, 0.25, 0.3)[:shape[-1]]
  np.testing.assert_allclose(
      device_ops.normalize(floats, mean, std),
      host(lambda image: transforms.normalize(image, mean, std), floats), rtol=0, atol=FLOAT)


@pytest.mark.parametrize('shape', SHAPES)
def test_the_input_table_looks_up_exactly_the_hosts_to_float_and_normalize(shape):
  x = images(shape)
  channels = shape[-1]
  np.testing.assert_array_equal(device_ops.look_up(x, device_ops.input_table(channels)),
                                host(transforms.to_float, x))
  mean, std = (0.5, 0.4, 0.3)[:channels], (0.2, 0.25, 0.3)[:channels]
  table = device_ops.input_table(channels, mean, std)
  assert table.shape == (256, channels) and table.dtype == np.float32
  out = jax.jit(lambda pixels: device_ops.look_up(pixels, table))(x)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(
      out, host(lambda image: transforms.normalize(transforms.to_float(image), mean, std), x))


@pytest.mark.parametrize('shape', SHAPES)
def test_take_pixels_reads_each_images_rows_and_columns(shape):
  x = images(shape, batch=3)
  rng = np.random.default_rng(0)
  rows = rng.integers(0, shape[0], (3, 5)).astype(np.int32)
  columns = rng.integers(0, shape[1], (3, 4)).astype(np.int32)
  out = jax.jit(device_ops.take_pixels)(x, rows, columns)
  assert out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, np.stack([image[r][:, c] for image, r, c
                                               in zip(x, rows, columns)]))


@pytest.mark.parametrize('shape, size', [((32, 32, 3), 36), ((64, 64, 3), 20), ((64, 48, 3), 50),
                                         ((7, 9, 1), 5), ((8, 8, 1), 12)])
def test_resize_shorter_matches_the_host_shape_and_pixels(shape, size):
  x = images(shape)
  out = jax.jit(device_ops.resize_shorter, static_argnums=1)(x, size)
  expected = host(lambda image: transforms.resize_shorter(transforms.to_float(image), size), x)
  assert out.shape == expected.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=0, atol=FLOAT)
  alexnet = jax.eval_shape(functools.partial(device_ops.resize_shorter, size=256),
                           jax.ShapeDtypeStruct((1, 64, 48, 3), jnp.uint8))
  assert alexnet.shape == (1, 341, 256, 3)  # the host's rounding: 64x48 -> 341x256


@pytest.mark.parametrize('shape, size', [((32, 32, 3), 32), ((64, 64, 3), 56), ((7, 9, 1), 6),
                                         ((8, 8, 1), 5)])
def test_center_and_random_crops_match_the_host_exactly(shape, size):
  x = images(shape)
  np.testing.assert_array_equal(device_ops.center_crop(x, size),
                                host(transforms.center_crop, x, [size] * len(x)))
  offsets = np.asarray(device_ops.sample_crop(key(), len(x), *shape[:2], size))
  out = jax.jit(device_ops.crop, static_argnums=(2, 3))(x, offsets, size, size)
  assert out.dtype == jnp.uint8
  expected = host(lambda image, top_left: transforms.random_crop(
      image, Scripted(integers=[top_left]), size), x, offsets)
  np.testing.assert_array_equal(out, expected)


def test_a_crop_larger_than_the_image_is_the_hosts_error():
  with pytest.raises(transforms.DataError, match='crop_size=10'):
    device_ops.sample_crop(key(), 2, 8, 9, 10)


@pytest.mark.parametrize('shape', SHAPES)
def test_flip_matches_the_host_exactly(shape):
  x = images(shape, batch=4)
  flips = np.array([True, False, True, False])
  out = jax.jit(device_ops.flip)(x, flips)
  assert out.dtype == jnp.uint8
  expected = host(lambda image, flipped: transforms.random_flip(
      image, Scripted(random=[0.0 if flipped else 0.99]), 0.5), x, flips)
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('pad', [1, 4])
def test_pad_crop_matches_the_host_exactly(shape, pad):
  x = images(shape, batch=5)
  offsets = np.array(device_ops.sample_pad_crop(key(pad), len(x), pad))
  offsets[:2] = [[0, 2 * pad], [2 * pad, 0]]  # the extreme windows too
  out = jax.jit(device_ops.pad_crop, static_argnums=2)(x, offsets, pad)
  assert out.dtype == jnp.uint8
  expected = host(lambda image, top_left: transforms.pad_and_random_crop(
      image, Scripted(integers=[top_left]), pad), x, offsets)
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('shape', SHAPES)
def test_translate_matches_the_host_exactly(shape):
  x = images(shape, batch=5)
  fraction = 0.3
  shifts = np.array(device_ops.sample_translate(key(), len(x), fraction, *shape[:2]))
  shifts[0] = -device_ops.translate_limits(*shape[:2], fraction)  # the largest shifts too
  shifts[1] = device_ops.translate_limits(*shape[:2], fraction)
  out = jax.jit(device_ops.translate)(x, shifts)
  assert out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, host(transforms.translate, x, shifts[:, 0], shifts[:, 1]))
  np.testing.assert_array_equal(out, host(lambda image, dy_dx: transforms.random_translate(
      image, Scripted(integers=[dy_dx]), fraction), x, shifts))


@pytest.mark.parametrize('shape', SHAPES)
def test_rotate_matches_the_host(shape):
  x = images(shape, batch=6)
  angles = np.array(device_ops.sample_rotate(key(), len(x), 180.0))
  angles[:3] = [0.0, 90.0, -37.5]
  out = jax.jit(device_ops.rotate)(x, angles)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, host(transforms.rotate, x, angles.tolist()), rtol=0,
                             atol=ROTATE)
  np.testing.assert_allclose(out, host(lambda image, angle: transforms.random_rotate(
      image, Scripted(uniform=[angle]), 180.0), x, angles.tolist()), rtol=0, atol=ROTATE)



def test_rotating_by_no_angle_gives_the_float_images_exactly():
  # The CPU path's conditional skips the sampling when every angle is 0; that is only
  # right if sampling at angle 0 returns each pixel unchanged, to the bit.
  x = images((9, 7, 3), batch=4)
  zeros = np.zeros(len(x), np.float32)
  expected = np.asarray(device_ops.to_float(x))
  np.testing.assert_array_equal(jax.jit(device_ops.rotate_sampled)(x, zeros), expected)
  np.testing.assert_array_equal(jax.jit(device_ops.rotate)(x, zeros), expected)


def test_rotation_after_pixel_moves_gives_the_same_pixels_on_its_own_or_in_one_program():
  # What the conditional changes is only what XLA fuses: a pad-crop and a flip before the
  # rotation, in one program, give the pixels of the three ops run one call at a time.
  x = images((12, 10, 3), batch=6)
  offsets = np.array(device_ops.sample_pad_crop(key(), len(x), 2))
  flips = np.arange(len(x)) % 2 == 0
  angles = np.array(device_ops.sample_rotate(key(), len(x), 30.0))
  moved = device_ops.flip(device_ops.pad_crop(x, offsets, 2), flips)
  apart = jax.jit(device_ops.rotate_sampled)(np.asarray(moved), angles)
  together = jax.jit(lambda x: device_ops.rotate(
      device_ops.flip(device_ops.pad_crop(x, offsets, 2), flips), angles))(x)
  np.testing.assert_allclose(together, apart, rtol=0, atol=1e-6)

@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('name', ['adjust_brightness', 'adjust_contrast', 'adjust_saturation',
                                  'adjust_sharpness'])
def test_photometric_adjustments_match_the_host(shape, name):
  x = images(shape, batch=4)
  factors = np.array([0.0, 0.6, 1.0, 1.7], np.float32)
  out = jax.jit(getattr(device_ops, name))(x, factors)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, host(getattr(transforms, name), x, factors.tolist()), rtol=0,
                             atol=FLOAT)


@pytest.mark.parametrize('shape', SHAPES)
def test_random_contrast_matches_the_host(shape):
  x = images(shape)
  factors = np.asarray(device_ops.sample_contrast(key(), len(x), (0.5, 1.5)))
  out = jax.jit(device_ops.adjust_contrast)(x, factors)
  np.testing.assert_allclose(out, host(lambda image, factor: transforms.random_contrast(
      image, Scripted(uniform=[factor]), (0.5, 1.5)), x, factors.tolist()), rtol=0, atol=FLOAT)


@pytest.mark.parametrize('shape', SHAPES)
def test_color_jitter_matches_the_host_in_each_order(shape):
  x = images(shape, batch=6)
  strengths = (0.4, 0.5, 0.9)
  params = jax.tree.map(np.asarray, device_ops.sample_color_jitter(key(), len(x), *strengths))
  params['order'] = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]],
                             np.int32)
  out = jax.jit(device_ops.color_jitter)(x, params)
  expected = host(lambda image, factors, order: transforms.color_jitter(
      image, Scripted(uniform=factors.tolist(), permutation=[order]), *strengths),
                  x, params['factors'], params['order'])
  np.testing.assert_allclose(out, expected, rtol=0, atol=FLOAT)


@pytest.mark.parametrize('shape', SHAPES)
def test_random_sharpness_matches_the_host(shape):
  x = images(shape, batch=4)
  params = {'apply': np.array([True, False, True, False]),
            'factor': np.full(4, 2.0, np.float32)}
  out = jax.jit(device_ops.sharpness)(x, params)
  assert out.dtype == jnp.float32
  expected = host(lambda image, applied: transforms.to_float(transforms.random_sharpness(
      image, Scripted(random=[0.0 if applied else 0.99]), 2.0, 0.5)), x, params['apply'])
  np.testing.assert_allclose(out, expected, rtol=0, atol=FLOAT)


def float_batch(shape, size=5, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.random((size,) + shape, dtype=np.float32),
          'label': rng.integers(0, 100, size).astype(np.int32)}


def assert_same_batch(out, expected, atol):
  assert set(out) == set(expected)
  for name, value in expected.items():
    assert out[name].dtype == value.dtype and out[name].shape == value.shape
    tolerance = {'image': atol, 'mix_weight': WEIGHT}.get(name, 0)
    np.testing.assert_allclose(out[name], value, rtol=0, atol=tolerance)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('size', [1, 5, 6])
def test_mixup_matches_the_host(shape, size):
  batch = float_batch(shape, size)
  params = jax.tree.map(np.asarray, device_ops.sample_mixup(key(size), 0.4))
  out = jax.jit(device_ops.mixup)(batch, params)
  assert_same_batch(out, batch_ops.mixup(batch, Scripted(beta=[params['lam']]), 0.4), FLOAT)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('size', [1, 5, 6])
def test_cutmix_matches_the_host(shape, size):
  batch = float_batch(shape, size)
  for seed in range(6):
    params = jax.tree.map(np.asarray, device_ops.sample_cutmix(key(seed), 1.0, *shape[:2]))
    out = jax.jit(device_ops.cutmix)(batch, params)
    expected = batch_ops.cutmix(batch, Scripted(beta=[params['lam']],
                                                integers=[params['centre']]), 1.0)
    assert_same_batch(out, expected, 0)


def test_cutmix_box_rounds_half_to_even_as_the_host():
  # 1 - 0.75 = 0.25: side 0.5, so an 8x5 image's box is round(4.0) x round(2.5) = 4 x 2.
  params = {'lam': np.float32(0.75), 'centre': np.array([4, 2])}
  box = [int(edge) for edge in device_ops.cutmix_box(8, 5, params)]
  assert box == list(batch_ops.cutmix_box(8, 5, Scripted(integers=[[4, 2]]), 0.25))


# (2) The sampled parameters follow the configured distributions.


def assert_near(value, expected, sigma, sigmas=4):
  assert abs(value - expected) <= sigmas * sigma, (value, expected, sigma)


def assert_uniform_integers(values, low, high):
  """values cover exactly low..high, each count within 4 sigma of uniform."""
  values = np.asarray(values).ravel()
  counts = np.bincount(values - low)
  assert values.min() == low and values.max() == high and len(counts) == high - low + 1
  p = 1 / len(counts)
  for count in counts:
    assert_near(count, len(values) * p, np.sqrt(len(values) * p * (1 - p)))


def assert_uniform_floats(values, low, high):
  """values in [low, high], mean and variance within 4 sigma of uniform's."""
  values = np.asarray(values, np.float64).ravel()
  assert low <= values.min() and values.max() <= high
  n, width = len(values), high - low
  assert_near(values.mean(), (low + high) / 2, width / np.sqrt(12 * n))
  # Var((U - mean)^2) = w^4 / 180 for U uniform over a width w.
  assert_near(values.var(), width ** 2 / 12, width ** 2 * np.sqrt(1 / 180 / n))


def assert_bernoulli(flags, prob):
  flags = np.asarray(flags).ravel()
  assert flags.dtype == bool
  assert_near(flags.mean(), prob, np.sqrt(prob * (1 - prob) / len(flags)))


@pytest.mark.parametrize('prob', [0.0, 0.3, 1.0])
def test_flip_is_bernoulli_of_its_probability(prob):
  assert_bernoulli(device_ops.sample_flip(key(), DRAWS, prob), prob)


def test_crop_and_pad_crop_offsets_are_uniform_over_every_window():
  offsets = np.asarray(device_ops.sample_crop(key(), DRAWS, 36, 40, 32))
  assert offsets.shape == (DRAWS, 2) and offsets.dtype == np.int32
  assert_uniform_integers(offsets[:, 0], 0, 4)
  assert_uniform_integers(offsets[:, 1], 0, 8)
  offsets = np.asarray(device_ops.sample_pad_crop(key(1), DRAWS, 4))
  assert_uniform_integers(offsets[:, 0], 0, 8)
  assert_uniform_integers(offsets[:, 1], 0, 8)
  assert not np.array_equal(offsets[:, 0], offsets[:, 1])


def test_translate_shifts_cover_exactly_the_inclusive_range_uniformly():
  shifts = np.asarray(device_ops.sample_translate(key(), DRAWS, 0.1, 32, 64))
  assert shifts.dtype == np.int32
  assert_uniform_integers(shifts[:, 0], -3, 3)  # int(32 * 0.1) = 3
  assert_uniform_integers(shifts[:, 1], -6, 6)  # int(64 * 0.1) = 6
  assert np.all(np.asarray(device_ops.sample_translate(key(), 10, 0.1, 8, 8)) == 0)


def test_rotation_angles_contrast_factors_and_jitter_factors_are_uniform():
  assert_uniform_floats(device_ops.sample_rotate(key(), DRAWS, 15.0), -15, 15)
  assert_uniform_floats(device_ops.sample_contrast(key(1), DRAWS, (0.7, 1.3)), 0.7, 1.3)
  params = device_ops.sample_color_jitter(key(2), DRAWS, 0.2, 1.5, 0.0)
  factors = np.asarray(params['factors'])
  assert_uniform_floats(factors[:, 0], 0.8, 1.2)
  assert_uniform_floats(factors[:, 1], 0.0, 2.5)  # max(0, 1 - 1.5)
  assert np.all(factors[:, 2] == 1)  # strength 0: exactly 1, a no-op


def test_jitter_orders_are_uniform_over_the_six_permutations():
  order = np.asarray(device_ops.sample_color_jitter(key(), DRAWS, 0.1, 0.1, 0.1)['order'])
  assert np.all(np.sort(order, axis=1) == [0, 1, 2])
  codes = np.unique(order @ [9, 3, 1], return_inverse=True)[1]
  assert_uniform_integers(codes, 0, 5)


def test_sharpness_applies_with_its_probability():
  params = device_ops.sample_sharpness(key(), DRAWS, 2.0, 0.1)
  assert_bernoulli(params['apply'], 0.1)
  assert np.all(np.asarray(params['factor']) == 2.0)


def assert_beta(lam, alpha):
  """lam in [0, 1] with the mean and variance of Beta(alpha, alpha), each within 4 sigma."""
  lam = np.asarray(lam, np.float64)
  n, variance = len(lam), 1 / (4 * (2 * alpha + 1))
  excess_kurtosis = -6 / (2 * alpha + 3)
  assert 0 <= lam.min() and lam.max() <= 1
  assert_near(lam.mean(), 0.5, np.sqrt(variance / n))
  assert_near(lam.var(), variance, variance * np.sqrt((2 + excess_kurtosis) / n))


def test_batch_op_picks_an_op_uniformly_and_its_lambda_with_that_ops_alpha():
  keys = jax.random.split(key(), DRAWS)
  draw = jax.jit(jax.vmap(lambda k, alphas: device_ops.sample_batch_op(k, alphas, 5, 7),
                          in_axes=(0, None)))
  params = jax.tree.map(np.asarray, draw(keys, np.array([0.2, 5.0], np.float32)))
  assert_bernoulli(params['op'] == 1, 0.5)  # mixup or cutmix, as the host's one_of
  assert_beta(params['lam'][params['op'] == 0], 0.2)
  assert_beta(params['lam'][params['op'] == 1], 5.0)
  assert_uniform_integers(params['centre'][:, 0], 0, 4)
  assert_uniform_integers(params['centre'][:, 1], 0, 6)
  assert all(device_ops.sample_batch_op(k, (1.0,), 5, 7)['op'] == 0 for k in keys[:5])


def test_mixup_and_cutmix_draw_their_lambda_from_the_beta_sampler():
  for k in jax.random.split(key(1), 3):
    assert device_ops.sample_mixup(k, 0.3)['lam'] == device_ops.sample_beta(k, 0.3)
    cut = device_ops.sample_cutmix(k, 0.3, 5, 7)
    lam_key, centre_key = jax.random.split(k)
    assert cut['lam'] == device_ops.sample_beta(lam_key, 0.3)
    np.testing.assert_array_equal(cut['centre'], device_ops.sample_box_centre(centre_key, 5, 7))


# (3) The composed train and eval batches.


def test_every_host_augmentation_has_a_device_op_in_the_same_order():
  assert list(device_ops.DEVICE_AUGMENTATIONS) == list(transforms.AUGMENTATIONS)
  assert list(device_ops.DEVICE_BATCH_OPS) == list(batch_ops.BATCH_OPS)
  assert device_ops.unsupported(full_config()) == []


def test_unsupported_names_a_configured_op_without_a_device_op(monkeypatch):
  config = full_config()
  monkeypatch.setattr(device_ops, 'DEVICE_AUGMENTATIONS', {
      name: make for name, make in device_ops.DEVICE_AUGMENTATIONS.items()
      if name != 'rotate_degrees'})
  assert device_ops.unsupported(config) == ['rotate_degrees']
  config.augment.rotate_degrees = 0.0
  assert device_ops.unsupported(config) == []
  config.augment.rotate_degrees = 5.0
  with pytest.raises(ValueError, match='rotate_degrees'):
    device_ops.make_train_batch(config)


@functools.cache
def full_train_batch():
  """The jitted train batch of full_config, shared so its program compiles once."""
  return jax.jit(device_ops.make_train_batch(full_config()))


def test_train_batch_under_jit_with_every_augmentation():
  train_batch = full_train_batch()
  same = np.repeat(images((40, 48, 3), batch=1), 6, axis=0)  # one image, 6 times
  labels = np.arange(6, dtype=np.int32)
  out = train_batch(key(), same, labels)
  assert {name: (value.shape, value.dtype) for name, value in out.items()} == {
      'image': ((6, 32, 32, 3), jnp.float32), 'label': ((6,), jnp.int32),
      'mix_label': ((6,), jnp.int32), 'mix_weight': ((6,), jnp.float32)}
  np.testing.assert_array_equal(out['mix_label'], labels[::-1])
  assert np.all(np.isfinite(out['image']))
  pixels = np.asarray(out['image']).reshape(6, -1)
  assert len({row.tobytes() for row in pixels}) == 6  # each example its own randomness
  again = train_batch(key(), same, labels)
  np.testing.assert_array_equal(again['image'], out['image'])  # a function of the key
  assert not np.array_equal(train_batch(key(1), same, labels)['image'], out['image'])


def device_draws(config, batch_key, batch_size, shape):
  """The parameters make_train_batch draws from `batch_key`, reproduced stage by stage."""
  stream = functools.partial(device_ops.stream, batch_key)
  augment = config.augment
  crop = config.data.crop_size
  height, width = transforms.shorter_side_shape(*shape[:2], config.data.resize_shorter)
  draws = {
      'crop': device_ops.sample_crop(stream('crop'), batch_size, height, width, crop),
      'pad_crop': device_ops.sample_pad_crop(stream('pad_crop'), batch_size, augment.pad_crop),
      'flip': device_ops.sample_flip(stream('flip_prob'), batch_size, augment.flip_prob),
      'translate': device_ops.sample_translate(stream('translate'), batch_size,
                                               augment.translate, crop, crop),
      'rotate': device_ops.sample_rotate(stream('rotate_degrees'), batch_size,
                                         augment.rotate_degrees),
      'contrast': device_ops.sample_contrast(stream('contrast'), batch_size, augment.contrast),
      'jitter': device_ops.sample_color_jitter(stream('color_jitter'), batch_size,
                                               *augment.color_jitter),
      'sharpness': device_ops.sample_sharpness(stream('sharpness'), batch_size,
                                               *augment.sharpness),
  }
  draws['mix'] = device_ops.sample_batch_op(
      stream('batch_op'), (augment.mixup_alpha, augment.cutmix_alpha), crop, crop)
  return jax.tree.map(np.asarray, draws)


def test_train_batch_equals_the_host_pipeline_driven_by_the_same_draws():
  config = full_config()
  train_preprocess, _ = transforms.make_preprocess(config)
  batch_transform = batch_ops.make_batch_transform(config)
  x, labels = images((40, 48, 3), batch=6, seed=3), np.arange(6, dtype=np.int32)
  train_batch = full_train_batch()
  ops_seen = set()
  for seed in range(4):
    batch_key = key(seed)
    out = train_batch(batch_key, x, labels)
    d = device_draws(config, batch_key, len(x), x.shape[1:])
    ops_seen.add(int(d['mix']['op']))
    records = []
    for i, image in enumerate(x):
      rng = Scripted(
          integers=[d['crop'][i], d['pad_crop'][i], d['translate'][i]],
          random=[0.0 if d['flip'][i] else 0.99, 0.0 if d['sharpness']['apply'][i] else 0.99],
          uniform=[d['rotate'][i], d['contrast'][i], *d['jitter']['factors'][i]],
          permutation=[d['jitter']['order'][i]])
      records.append(train_preprocess({'image': image, 'label': labels[i]}, rng))
      assert not rng.left()  # the host drew exactly what the device drew
    batch = {name: np.stack([r[name] for r in records]) for name in ('image', 'label')}
    op, lam, centre = d['mix']['op'], d['mix']['lam'], d['mix']['centre']
    mix = Scripted(integers=[op, centre] if op else [op], beta=[lam])
    assert_same_batch(out, batch_transform(batch, mix), PIPELINE)
  assert ops_seen == {0, 1}  # both mixup and cutmix were compared


def test_eval_batch_equals_the_host_eval_preprocess():
  config = base_config()
  config.data.resize_shorter = 36
  config.data.crop_size = 32
  config.data.mean = (0.5, 0.45, 0.4)
  config.data.std = (0.25, 0.2, 0.3)
  config.augment.flip_prob = 1.0  # training only: eval ignores it
  _, eval_preprocess = transforms.make_preprocess(config)
  eval_batch = jax.jit(device_ops.make_eval_batch(config))
  for shape in [(40, 48, 3), (32, 32, 3), (64, 50, 3)]:
    x, labels = images(shape, batch=4), np.arange(4)
    records = [eval_preprocess({'image': image, 'label': label}) for image, label in zip(x, labels)]
    expected = {name: np.stack([r[name] for r in records]) for name in ('image', 'label')}
    assert_same_batch(eval_batch(x, labels), expected, 4 * FLOAT)  # 1e-6 in [0, 1], / std >= 0.2


def test_train_and_eval_batch_without_preprocessing_only_scale():
  config = base_config()
  x, labels = images((8, 8, 1), batch=3), np.arange(3)
  for batch in (device_ops.make_train_batch(config)(key(), x, labels),
                device_ops.make_eval_batch(config)(x, labels)):
    assert set(batch) == {'image', 'label'}
    np.testing.assert_array_equal(batch['image'], host(transforms.to_float, x))
