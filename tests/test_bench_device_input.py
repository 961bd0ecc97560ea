"""bench.device_input's pieces run on tiny sizes and make what they claim to make."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyimagenet_jax.bench import device_input
from tinyimagenet_jax.data import device_ops, resident

COUNT, BATCH, SIDE = 24, 4, 8


def tiny_config():
  config = device_input.input_config('', '')
  config.batch_size = BATCH
  return config


def tiny_split(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (COUNT, SIDE, SIDE, 3), dtype=np.uint8),
          rng.integers(0, 10, COUNT).astype(np.int32))


def normalised_range(config):
  table = device_ops.input_table(3, config.data.mean, config.data.std)
  return table.min(), table.max()


@pytest.mark.parametrize('loader, channels_first', [('device_batches', False),
                                                     ('sketch_batches', False),
                                                     ('torch_batches', True)])
def test_each_loader_makes_normalised_float_batches(loader, channels_first):
  if loader == 'torch_batches':
    pytest.importorskip('torch', reason='the airbench-style contender is written in PyTorch')
  config = tiny_config()
  images, labels = tiny_split()
  out = getattr(device_input, loader)(config, images, labels)(3)
  pixels, targets = (out['image'][0], out['label'][0]) if isinstance(out, dict) else out
  pixels, targets = np.asarray(pixels), np.asarray(targets)
  if channels_first:
    pixels = pixels.transpose(0, 2, 3, 1)
  assert pixels.shape == (BATCH, SIDE, SIDE, 3) and pixels.dtype == np.float32
  assert targets.shape == (BATCH,) and set(targets) <= set(labels)
  low, high = normalised_range(config)
  assert low - 1e-5 <= pixels.min() and pixels.max() <= high + 1e-5


def test_device_loader_is_the_projects_train_batch_of_the_epochs_rows():
  config = tiny_config()
  images, labels = tiny_split(1)
  out = device_input.device_batches(config, images, labels)(1)
  rows = np.asarray(resident.epoch_order(config.seed, 0, COUNT))[:BATCH]
  expected = device_ops.make_train_batch(config)(resident.batch_key(config.seed, 0),
                                                 images[rows], labels[rows])
  np.testing.assert_array_equal(out['image'][0], expected['image'])
  np.testing.assert_array_equal(out['label'][0], labels[rows])


def test_grain_contender_returns_the_last_of_its_batches():
  assert device_input.grain_batches(iter(range(10)))(3) == 2


def test_unrolled_train_call_equals_the_projects_scan():
  config = tiny_config()
  images, labels = tiny_split(2)
  data = resident.ResidentSplit(jnp.asarray(images), jnp.asarray(labels))
  step = lambda state, batch: (state + batch['image'].sum(), {'sum': batch['image'].sum()})
  make_batch = device_ops.make_train_batch(config)
  order = resident.epoch_order(config.seed, 0, COUNT)
  args = (jnp.float32(0), data, order, 1, 5, resident.seed_argument(config.seed), 3)
  scan = jax.jit(resident.train_call(step, make_batch, BATCH), static_argnums=6)(*args)
  unrolled = jax.jit(resident.train_call(step, make_batch, BATCH, unroll=True),
                     static_argnums=6)(*args)
  np.testing.assert_allclose(unrolled[0], scan[0], rtol=1e-6)
  assert unrolled[1]['sum'].shape == (3,)
  np.testing.assert_allclose(unrolled[1]['sum'], scan[1]['sum'], rtol=1e-6)


def test_the_fused_contender_runs_the_op_without_a_conditional(monkeypatch):
  """`augment_apart`'s 'fused' variant must compile the augmentation with no conditional,
  and its 'apart' variant (the project's rotate) with one, or the table compares nothing."""
  images = jnp.asarray(tiny_split()[0][:BATCH])
  angles = jnp.asarray([5.0, -3.0, 0.0, 12.0])
  program = lambda: jax.jit(lambda *args: device_ops.rotate(*args)).lower(
      images, angles).compile().as_text()  # a new function each time: traced afresh
  apart = program()
  monkeypatch.setattr(device_ops, 'apart_on_cpu', device_input.fused)
  fused = program()
  assert ' conditional(' in apart and ' conditional(' not in fused
  np.testing.assert_allclose(jax.jit(device_ops.rotate)(images, angles),
                             jax.jit(device_ops.rotate_sampled)(images, angles), atol=1e-6)
