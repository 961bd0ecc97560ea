"""The train-step benchmark's torch and Keras twins compute what the Flax models compute."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyimagenet_jax import models
from tinyimagenet_jax.bench import common, keras_models, train_step

# (name, image size, classes) of each benchmarked model.
BENCHMARKED = [(name, spec.image_size, spec.num_classes)
               for name, spec in train_step.BENCH_MODELS.items()]
SMALL_RESNET = {'stage_sizes': (1, 1), 'widths': (8, 16)}
# name -> (image size, classes, options): conv4 and lenet5 as benchmarked; a small
# two-stage ResNet (its second stage's first block has the strided projection).
EQUIVALENCE = {'conv4': (32, 10, {}), 'lenet5': (32, 100, {}), 'resnet18': (16, 20, SMALL_RESNET)}

TORCH_TWIN = ('the PyTorch twins of the benchmarked models need torch (a CPU build: pip install'
              ' torch --index-url https://download.pytorch.org/whl/cpu), as .ci/run installs')


def perturb_vectors(variables, key):
  """`variables` with N(0, 0.1^2) noise added to every 1-D leaf (biases, BN scales and shifts)."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [
      leaf + 0.1 * jax.random.normal(key, leaf.shape) if leaf.ndim == 1 else leaf
      for leaf, key in zip(leaves, keys)])


@functools.cache
def flax_reference(name: str):
  """An EQUIVALENCE model's Flax variables (1-D ones perturbed), random images, their logits.

  Freshly initialised biases are 0 and BN scales 1, which would hide a mix-up;
  logits are in training mode (batch statistics), as in the benchmarked step.
  """
  image_size, num_classes, options = EQUIVALENCE[name]
  model = models.build_model(ml_collections.ConfigDict({'name': name, **options}), num_classes)
  images = np.random.default_rng(2).standard_normal((4, image_size, image_size, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  variables = jax.jit(perturb_vectors)(variables, jax.random.key(1))
  logits, _ = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
      variables, images)
  return variables, images, np.asarray(logits)


def flax_parameter_count(name: str, image_size: int, num_classes: int) -> int:
  model = models.build_model(ml_collections.ConfigDict({'name': name}), num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes['params']))


def assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
  """Equal to 1e-4 relative to the logits' scale (float32 rounding, different kernels)."""
  np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize('name, image_size, num_classes', BENCHMARKED)
def test_torch_twin_has_the_flax_parameter_count(name, image_size, num_classes):
  pytest.importorskip('torch', reason=TORCH_TWIN)
  from tinyimagenet_jax.bench import torch_models
  twin = torch_models.MODELS[name](num_classes, image_size)
  assert torch_models.parameter_count(twin) == flax_parameter_count(name, image_size, num_classes)


@pytest.mark.parametrize('name, image_size, num_classes', BENCHMARKED)
def test_keras_twin_has_the_flax_parameter_count(name, image_size, num_classes):
  pytest.importorskip('tensorflow')
  twin = keras_models.MODELS[name](num_classes, image_size)
  assert keras_models.parameter_count(twin) == flax_parameter_count(name, image_size, num_classes)


@pytest.mark.parametrize('name', EQUIVALENCE)
def test_torch_twin_with_flax_weights_gives_flax_logits(name):
  torch = pytest.importorskip('torch', reason=TORCH_TWIN)
  from tinyimagenet_jax.bench import torch_models
  variables, images, logits = flax_reference(name)
  image_size, num_classes, options = EQUIVALENCE[name]
  twin = torch_models.MODELS[name](num_classes, image_size, **options)
  torch_models.load_flax_variables(twin, variables)
  twin = twin.to(memory_format=torch.channels_last).train()
  inputs = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last)
  with torch.no_grad():
    theirs = twin(inputs).numpy()
  assert_close(theirs, logits)


@pytest.mark.parametrize('name', EQUIVALENCE)
def test_keras_twin_with_flax_weights_gives_flax_logits(name):
  pytest.importorskip('tensorflow')
  variables, images, logits = flax_reference(name)
  image_size, num_classes, options = EQUIVALENCE[name]
  twin = keras_models.MODELS[name](num_classes, image_size, **options)
  keras_models.load_flax_variables(twin, variables)
  theirs = np.asarray(twin(images, training=True))
  assert_close(theirs, logits)


def test_models_default_to_all_and_a_typo_names_the_choices():
  assert train_step.selected_models(common.Args()) == ('conv4', 'lenet5', 'resnet18')
  assert train_step.selected_models(common.Args(models=('lenet5',))) == ('lenet5',)
  with pytest.raises(ValueError, match='choose from: conv4, lenet5, resnet18'):
    train_step.selected_models(common.Args(models=('resnet',)))
