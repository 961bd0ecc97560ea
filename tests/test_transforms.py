"""Each op keeps shape, dtype and range, and satisfies its invariant."""

import numpy as np
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import transforms


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
