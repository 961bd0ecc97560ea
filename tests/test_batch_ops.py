"""mixup and cutmix: mixed images, partners' labels and exact own-label weights."""

import numpy as np
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import batch_ops


def batch(size: int = 6, seed: int = 0, shape=(8, 10, 3)) -> dict:
  rng = np.random.default_rng(seed)
  return {'image': rng.random((size,) + shape, dtype=np.float32),
          'label': rng.integers(0, 100, size).astype(np.int32)}


@pytest.mark.parametrize('op', [batch_ops.mixup, batch_ops.cutmix])
@pytest.mark.parametrize('size', [1, 5, 6])
def test_mix_adds_partner_labels_and_weights_and_keeps_the_input(op, size):
  original = batch(size)
  copy = {key: value.copy() for key, value in original.items()}
  out = op(original, np.random.default_rng(0), 1.0)
  np.testing.assert_array_equal(out['label'], copy['label'])
  np.testing.assert_array_equal(out['mix_label'], copy['label'][::-1])
  assert out['mix_label'].dtype == np.int32 and out['mix_weight'].dtype == np.float32
  assert out['mix_weight'].shape == (size,) and np.all(out['mix_weight'] == out['mix_weight'][0])
  assert 0 <= out['mix_weight'][0] <= 1
  assert out['image'].shape == copy['image'].shape and out['image'].dtype == np.float32
  for key, value in copy.items():
    np.testing.assert_array_equal(original[key], value)


def test_mixup_blends_each_image_with_its_partner_by_the_weight():
  weights = []
  for seed in range(10):
    x = batch(seed=seed)
    out = batch_ops.mixup(x, np.random.default_rng(seed), 0.4)
    weight = out['mix_weight'][0]
    np.testing.assert_allclose(out['image'], weight * x['image'] + (1 - weight) * x['image'][::-1],
                               rtol=1e-6, atol=1e-7)
    weights.append(weight)
  assert len(set(weights)) == 10 and 0 < min(weights) and max(weights) < 1


def test_cutmix_weight_is_the_exact_fraction_of_own_pixels_left():
  sizes = set()
  for seed in range(40):
    x = batch(seed=seed)
    out = batch_ops.cutmix(x, np.random.default_rng(seed), 1.0)
    changed = np.any(out['image'] != x['image'], axis=-1)  # B x H x W
    partners = np.all(out['image'] == x['image'][::-1], axis=-1)
    assert np.all(partners[changed])
    own_fraction = 1 - changed.mean(axis=(1, 2))
    np.testing.assert_allclose(own_fraction, out['mix_weight'], rtol=1e-6)
    rows, columns = changed[0].any(1), changed[0].any(0)
    np.testing.assert_array_equal(changed[0], np.outer(rows, columns))  # one box
    sizes.add(int(changed[0].sum()))
  assert len(sizes) > 10  # boxes of many sizes, clipped at the borders or not


def test_ops_are_functions_of_the_rng_seed():
  x = batch()
  for op in (batch_ops.mixup, batch_ops.cutmix):
    first, again = op(x, np.random.default_rng(3), 1.0), op(x, np.random.default_rng(3), 1.0)
    for key in first:
      np.testing.assert_array_equal(first[key], again[key])


def config_with(**alphas):
  config = config_lib.base_config()
  config.augment.update(alphas)
  return config


def test_batch_transform_is_off_by_default_and_each_op_has_a_config_field():
  assert batch_ops.make_batch_transform(config_lib.base_config()) is None
  assert set(batch_ops.BATCH_OPS) <= set(config_lib.base_config().augment)


@pytest.mark.parametrize('field, op', [('mixup_alpha', batch_ops.mixup),
                                       ('cutmix_alpha', batch_ops.cutmix)])
def test_one_alpha_set_gives_that_op(field, op):
  transform = batch_ops.make_batch_transform(config_with(**{field: 0.5}))
  x = batch()
  got, expected = transform(x, np.random.default_rng(1)), op(x, np.random.default_rng(1), 0.5)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])


def test_both_alphas_set_pick_mixup_or_cutmix_per_batch():
  transform = batch_ops.make_batch_transform(config_with(mixup_alpha=0.5, cutmix_alpha=0.5))
  x = batch()
  kinds = []
  for seed in range(20):
    image = transform(x, np.random.default_rng(seed))['image']
    pasted = np.all((image == x['image']) | (image == x['image'][::-1]))
    kinds.append('cutmix' if pasted else 'mixup')
  assert 5 <= kinds.count('cutmix') <= 15
