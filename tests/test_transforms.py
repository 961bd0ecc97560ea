"""Each op keeps shape, dtype and range, and satisfies its invariant."""

import functools
import pickle

import numpy as np
from PIL import Image
from PIL import ImageEnhance
import pytest
from scipy import ndimage

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import DataError


def image(seed: int = 0, shape=(10, 12, 3)) -> np.ndarray:
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_to_float_scales_uint8_to_unit_range():
  pixels = np.array([[[0, 128, 255]]], np.uint8)
  out = transforms.to_float(pixels)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, [[[0, 128 / 255, 1]]], rtol=1e-6)


def test_flip_twice_is_identity_and_prob_zero_never_flips():
  rng = np.random.default_rng(0)
  x = image()
  once = transforms.random_flip(x, rng, prob=1.0)
  np.testing.assert_array_equal(once, x[:, ::-1])
  np.testing.assert_array_equal(transforms.random_flip(once, rng, prob=1.0), x)
  assert all(transforms.random_flip(x, rng, prob=0.0) is x for _ in range(20))


@pytest.mark.parametrize('pad', [1, 4])
def test_pad_crop_keeps_shape_and_moves_content_by_at_most_pad(pad):
  rng = np.random.default_rng(1)
  x = image()
  for _ in range(20):
    out = transforms.pad_and_random_crop(x, rng, pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= out.min() and out.max() <= 1
    matches = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
               if np.array_equal(out[pad:-pad, pad:-pad],
                                 x[pad + dy:x.shape[0] - pad + dy, pad + dx:x.shape[1] - pad + dx])]
    assert matches


def test_pad_crop_of_zero_is_identity():
  x = image()
  np.testing.assert_array_equal(transforms.pad_and_random_crop(x, np.random.default_rng(0), 0), x)


def test_normalize_gives_zero_mean_unit_std_per_channel():
  x = image(shape=(50, 50, 3))
  mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
  out = transforms.normalize(x, mean, std).reshape(-1, 3)
  np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(out.std(0), 1, atol=1e-5)


def test_make_preprocess_augments_train_only_and_normalises_both():
  config = config_lib.base_config()
  config.augment.flip_prob = 1.0
  config.data.mean, config.data.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  train, evaluation = transforms.make_preprocess(config)
  record = {'image': (image() * 255).astype(np.uint8), 'label': 3}
  expected = (transforms.to_float(record['image']) - 0.5) / 0.25
  np.testing.assert_allclose(evaluation(record)['image'], expected, rtol=1e-6)
  np.testing.assert_allclose(train(record, np.random.default_rng(0))['image'],
                             expected[:, ::-1], rtol=1e-6)
  assert evaluation(record)['label'] == np.int32(3)


def uint8_image(shape=(20, 24, 3)) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def colour_cast_image() -> np.ndarray:
  """uint8 RGB noise with a strong red cast, so its luma mean is far from its channel mean."""
  noise = np.random.default_rng(0).random((20, 24, 3))
  low, high = np.array([150, 0, 0]), np.array([255, 100, 255])
  return (low + noise * (high - low)).astype(np.uint8)


# Every random op at a setting strong enough to clip, keyed by a readable id.
RANDOM_OPS = {
    'translate': functools.partial(transforms.random_translate, fraction=0.3),
    'rotate': functools.partial(transforms.random_rotate, degrees=30.0),
    'contrast': functools.partial(transforms.random_contrast, factor_range=(0.2, 3.0)),
    'color_jitter': functools.partial(
        transforms.color_jitter, brightness=0.8, contrast=0.8, saturation=0.8),
    'sharpness': functools.partial(transforms.random_sharpness, factor=4.0, prob=0.5),
    'pad_crop': functools.partial(transforms.pad_and_random_crop, pad=3),
    'flip': functools.partial(transforms.random_flip, prob=0.5),
}


@pytest.mark.parametrize('name', RANDOM_OPS)
@pytest.mark.parametrize('shape', [(10, 12, 3), (9, 9, 1)])
def test_random_op_keeps_shape_dtype_and_range(name, shape):
  rng = np.random.default_rng(2)
  for seed in range(10):
    out = RANDOM_OPS[name](image(seed, shape), rng)
    assert out.shape == shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize('name', RANDOM_OPS)
def test_random_op_is_a_function_of_the_rng_seed(name):
  op, x = RANDOM_OPS[name], image()
  np.testing.assert_array_equal(op(x, np.random.default_rng(7)), op(x, np.random.default_rng(7)))
  assert any(not np.array_equal(op(x, np.random.default_rng(7)), op(x, np.random.default_rng(s)))
             for s in range(10))


@pytest.mark.parametrize('op', [
    functools.partial(transforms.adjust_contrast, factor=2.5),
    functools.partial(transforms.adjust_sharpness, factor=5.0),
    functools.partial(transforms.adjust_saturation, factor=3.0),
    functools.partial(transforms.adjust_brightness, factor=1.8),
])
def test_deterministic_op_keeps_shape_dtype_and_range(op):
  for shape in [(10, 12, 3), (9, 9, 1)]:
    out = op(image(3, shape))
    assert out.shape == shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_translate_is_a_slice_with_the_nearest_edge_repeated():
  x = image(shape=(6, 7, 3))
  down_left = np.pad(x[:-2, 3:], ((2, 0), (0, 3), (0, 0)), mode='edge')
  np.testing.assert_array_equal(transforms.translate(x, 2, -3), down_left)
  up_right = np.pad(x[1:, :-4], ((0, 1), (4, 0), (0, 0)), mode='edge')
  np.testing.assert_array_equal(transforms.translate(x, -1, 4), up_right)


def test_random_translate_of_zero_is_identity():
  x = image()
  np.testing.assert_array_equal(transforms.random_translate(x, np.random.default_rng(0), 0.0), x)


def test_random_translate_shifts_by_whole_pixels_up_to_the_fraction():
  x = image(shape=(8, 12, 3))  # fraction 0.25: up to 2 rows and 3 columns either way
  rng = np.random.default_rng(0)
  offsets = set()
  for _ in range(60):
    out = transforms.random_translate(x, rng, 0.25)
    offsets |= {(dy, dx) for dy in range(-8, 9) for dx in range(-12, 13)
                if np.array_equal(out, transforms.translate(x, dy, dx))}
  assert {abs(dy) for dy, _ in offsets} == {0, 1, 2}
  assert {abs(dx) for _, dx in offsets} == {0, 1, 2, 3}


def test_rotate_by_right_angles_matches_rot90_on_a_square():
  x = image(shape=(9, 9, 3))
  np.testing.assert_allclose(transforms.rotate(x, 90), np.rot90(x), atol=1e-6)
  np.testing.assert_allclose(transforms.rotate(x, -90), np.rot90(x, -1), atol=1e-6)
  np.testing.assert_allclose(transforms.rotate(x, 180), x[::-1, ::-1], atol=1e-6)


def test_zero_rotation_is_identity():
  x = image()
  np.testing.assert_allclose(transforms.rotate(x, 0), x, atol=1e-6)
  np.testing.assert_allclose(transforms.random_rotate(x, np.random.default_rng(0), 0.0), x,
                             atol=1e-6)


def test_rotation_fills_corners_with_the_nearest_edge_not_black():
  flat = np.full((15, 21, 3), 0.7, np.float32)
  np.testing.assert_allclose(transforms.rotate(flat, 30), flat, atol=1e-6)


def test_contrast_factor_one_is_identity_and_zero_is_the_mean_grey():
  x = image()
  np.testing.assert_array_equal(transforms.adjust_contrast(x, 1.0), x)
  mean_grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).mean()
  np.testing.assert_allclose(transforms.adjust_contrast(x, 0.0), np.full_like(x, mean_grey),
                             rtol=1e-5)


@pytest.mark.parametrize('factor', [0.0, 0.5, 1.3, 2.0])
def test_adjust_contrast_matches_pil(factor):
  pixels = colour_cast_image()
  expected = np.asarray(ImageEnhance.Contrast(Image.fromarray(pixels)).enhance(factor))
  out = transforms.adjust_contrast(transforms.to_float(pixels), factor)
  np.testing.assert_allclose(out * 255, expected, atol=2)


def test_random_contrast_scales_deviations_by_a_factor_in_range():
  x = 0.4 + 0.2 * image()  # in [0.4, 0.6]: factors up to 1.3 never clip
  rng = np.random.default_rng(0)
  factors = [transforms.random_contrast(x, rng, (0.7, 1.3)).std() / x.std() for _ in range(30)]
  assert 0.7 - 1e-4 <= min(factors) < 0.8 and 1.2 < max(factors) <= 1.3 + 1e-4


def test_color_jitter_of_zero_strengths_is_identity():
  for shape in [(10, 12, 3), (10, 12, 1)]:
    x = image(shape=shape)
    np.testing.assert_array_equal(transforms.color_jitter(x, np.random.default_rng(0), 0, 0, 0), x)


def test_color_jitter_brightness_scales_pixels_by_a_factor_in_range():
  x = 0.6 * image()  # factors up to 1.5 never clip
  rng = np.random.default_rng(0)
  ratios = [transforms.color_jitter(x, rng, 0.5, 0, 0) / x for _ in range(30)]
  for ratio in ratios:
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
  factors = [ratio.flat[0] for ratio in ratios]
  assert 0.5 <= min(factors) < 0.7 and 1.3 < max(factors) <= 1.5


def test_saturation_zero_gives_luma_and_leaves_one_channel_images_alone():
  x = image()
  luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
  np.testing.assert_allclose(transforms.adjust_saturation(x, 0.0), np.stack([luma] * 3, -1),
                             rtol=1e-5)
  grey = image(shape=(10, 12, 1))
  np.testing.assert_array_equal(transforms.color_jitter(grey, np.random.default_rng(0), 0, 0, 0.9),
                                grey)


def test_sharpness_factor_one_is_identity_and_keeps_the_border():
  x = image()
  np.testing.assert_array_equal(transforms.adjust_sharpness(x, 1.0), x)
  sharpened = transforms.adjust_sharpness(x, 1.5)
  border = np.ones(x.shape[:2], bool)
  border[1:-1, 1:-1] = False
  np.testing.assert_allclose(sharpened[border], x[border], atol=1e-6)
  assert not np.allclose(sharpened[~border], x[~border])


@pytest.mark.parametrize('factor', [0.0, 0.5, 2.0])
def test_adjust_sharpness_matches_pil(factor):
  pixels = colour_cast_image()
  expected = np.asarray(ImageEnhance.Sharpness(Image.fromarray(pixels)).enhance(factor))
  out = transforms.adjust_sharpness(transforms.to_float(pixels), factor)
  np.testing.assert_allclose(out * 255, expected, atol=2)


def test_random_sharpness_applies_with_its_probability():
  x = image()
  rng = np.random.default_rng(0)
  sharpened = transforms.adjust_sharpness(x, 2.0)
  assert all(transforms.random_sharpness(x, rng, 2.0, 0.0) is x for _ in range(10))
  for _ in range(10):
    np.testing.assert_array_equal(transforms.random_sharpness(x, rng, 2.0, 1.0), sharpened)


@pytest.mark.parametrize('shape, size, expected', [
    ((64, 48), 256, (341, 256)),  # 64 * 256 / 48 = 341.33
    ((48, 64), 256, (256, 341)),
    ((30, 20), 5, (8, 5)),  # 7.5 rounds half up
    ((64, 64), 256, (256, 256)),
    ((500, 375), 256, (341, 256)),
])
def test_resize_shorter_sets_the_shorter_side_and_keeps_the_aspect(shape, size, expected):
  assert transforms.shorter_side_shape(*shape, size) == expected
  out = transforms.resize_shorter(image(shape=shape + (3,)), size)
  assert out.shape == expected + (3,) and out.dtype == np.float32
  assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize('shape, size', [((16, 12), 40), ((40, 30), 9), ((13, 13), 13)])
def test_resize_matches_pil_bilinear(shape, size):
  x = image(shape=shape + (3,))
  height, width = transforms.shorter_side_shape(*shape, size)
  expected = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize(
      (width, height), Image.Resampling.BILINEAR)) for c in range(3)], -1)
  np.testing.assert_allclose(transforms.resize_shorter(x, size), expected, atol=1e-5)


def test_center_crop_takes_the_middle():
  x = image(shape=(11, 12, 3))
  np.testing.assert_array_equal(transforms.center_crop(x, 4), x[3:7, 4:8])
  np.testing.assert_array_equal(transforms.center_crop(x, 11), x[:, :11])


def test_random_crop_takes_every_window_of_the_exact_size():
  x = image(shape=(6, 7, 3))
  rng = np.random.default_rng(0)
  corners = set()
  for _ in range(60):
    out = transforms.random_crop(x, rng, 4)
    assert out.shape == (4, 4, 3)
    corners |= {(top, left) for top in range(3) for left in range(4)
                if np.array_equal(out, x[top:top + 4, left:left + 4])}
  assert corners == {(top, left) for top in range(3) for left in range(4)}


def test_crop_larger_than_the_image_names_the_fix():
  with pytest.raises(DataError, match='config.data.crop_size=8'):
    transforms.center_crop(image(shape=(6, 9, 3)), 8)
  with pytest.raises(DataError, match='config.data.resize_shorter >= 8'):
    transforms.random_crop(image(shape=(9, 6, 3)), np.random.default_rng(0), 8)


def test_make_preprocess_resizes_then_crops_then_augments():
  config = config_lib.base_config()
  config.data.resize_shorter, config.data.crop_size = 16, 12
  config.augment.flip_prob = 1.0
  train, evaluation = transforms.make_preprocess(config)
  record = {'image': uint8_image(shape=(8, 10, 3)), 'label': 1}
  resized = transforms.resize_shorter(transforms.to_float(record['image']), 16)
  assert resized.shape == (16, 20, 3)
  np.testing.assert_array_equal(evaluation(record)['image'], resized[2:14, 4:16])
  rng = np.random.default_rng(0)
  for _ in range(10):
    out = train(record, rng)['image']
    assert out.shape == (12, 12, 3)
    assert any(np.array_equal(out, resized[top:top + 12, left:left + 12][:, ::-1])
               for top in range(5) for left in range(9))


def all_augmentations_config():
  config = config_lib.base_config()
  config.augment.pad_crop = 2
  config.augment.flip_prob = 0.5
  config.augment.translate = 0.1
  config.augment.rotate_degrees = 15.0
  config.augment.contrast = (0.7, 1.3)
  config.augment.color_jitter = (0.1, 0.1, 0.1)
  config.augment.sharpness = (2.0, 0.1)
  return config


def test_every_augmentation_has_a_config_field_and_runs_in_registry_order():
  config = all_augmentations_config()
  assert set(transforms.AUGMENTATIONS) <= set(config.augment)
  train, evaluation = transforms.make_preprocess(config)
  assert [op.func for op in train.augmentations] == [
      transforms.pad_and_random_crop, transforms.random_flip, transforms.random_translate,
      transforms.random_rotate, transforms.random_contrast, transforms.color_jitter,
      transforms.random_sharpness]
  assert evaluation.augmentations == ()


def test_preprocess_with_every_augmentation_pickles_and_replays_exactly():
  train, _ = transforms.make_preprocess(all_augmentations_config())
  restored = pickle.loads(pickle.dumps(train))
  record = {'image': uint8_image(), 'label': 4}
  for seed in range(5):
    expected = train(record, np.random.default_rng(seed))
    got = restored(record, np.random.default_rng(seed))
    np.testing.assert_array_equal(got['image'], expected['image'])
    assert got['image'].shape == (20, 24, 3) and got['image'].dtype == np.float32


@pytest.mark.parametrize('shape', [(64, 64, 3), (13, 20, 3), (20, 13, 1)])
@pytest.mark.parametrize('degrees', [7.3, -15.0, 37.5, 123.0])
def test_rotate_matches_scipy_ndimage_rotate(shape, degrees):
  x = image(4, shape)
  reference = ndimage.rotate(x, degrees, axes=(1, 0), reshape=False, order=1, mode='nearest')
  np.testing.assert_allclose(transforms.rotate(x, degrees), reference, atol=1e-6)


PIXEL_MOVING_OPS = {
    'pad_crop': functools.partial(transforms.pad_and_random_crop, pad=3),
    'flip': functools.partial(transforms.random_flip, prob=0.5),
    'translate': functools.partial(transforms.random_translate, fraction=0.3),
    'crop': functools.partial(transforms.random_crop, size=7),
}


@pytest.mark.parametrize('name', PIXEL_MOVING_OPS)
def test_pixel_moving_ops_keep_uint8_and_commute_with_to_float(name):
  op, pixels = PIXEL_MOVING_OPS[name], uint8_image()
  for seed in range(10):
    moved = op(pixels, np.random.default_rng(seed))
    assert moved.dtype == np.uint8
    np.testing.assert_array_equal(transforms.to_float(moved),
                                  op(transforms.to_float(pixels), np.random.default_rng(seed)))


def test_preprocess_on_uint8_equals_every_op_on_the_float_image():
  config = all_augmentations_config()
  config.data.mean, config.data.std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
  train, _ = transforms.make_preprocess(config)
  record = {'image': uint8_image(), 'label': 4}
  for seed in range(10):
    rng = np.random.default_rng(seed)
    expected = transforms.to_float(record['image'])
    for augment in train.augmentations:
      expected = augment(expected, rng)
    expected = transforms.normalize(expected, config.data.mean, config.data.std)
    np.testing.assert_array_equal(train(record, np.random.default_rng(seed))['image'], expected)
