"""Parameter counts, output shapes and option errors of the registered models."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from tinyimagenet_jax import models
from tinyimagenet_jax.errors import ConfigError


def init(name: str, shape: tuple[int, ...], num_classes: int = 10, **options):
  model = models.build_model(ml_collections.ConfigDict({'name': name, **options}), num_classes)
  variables = model.init(jax.random.key(0), jnp.zeros((2, *shape)))
  return model, variables


def count(variables) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name, shape, num_classes, expected', [
    ('conv4', (32, 32, 3), 10, 2_012_298),  # the first report's table
    ('lenet5', (32, 32, 1), 10, 61_706),  # LeCun 1998 with a full C3
    ('lenet5', (32, 32, 3), 100, 69_656),
    ('mlp', (32, 32, 3), 10, 3072 * 1024 + 1024 + 1024 * 10 + 10),
])
def test_parameter_counts(name, shape, num_classes, expected):
  assert count(init(name, shape, num_classes)[1]) == expected


def test_conv4_layer_shapes_match_the_report():
  _, variables = init('conv4', (32, 32, 3))
  kernels = [variables['params'][f'Conv_{i}']['kernel'].shape for i in range(4)]
  assert kernels == [(3, 3, 3, 64), (3, 3, 64, 128), (3, 3, 128, 256), (3, 3, 256, 256)]
  assert variables['params']['Dense_0']['kernel'].shape == (4 * 4 * 256, 256)


@pytest.mark.parametrize('name', sorted(models.MODELS))
@pytest.mark.parametrize('size', [32, 64])
def test_logits_and_features_shapes(name, size):
  model, variables = init(name, (size, size, 3), num_classes=7)
  images = jnp.ones((2, size, size, 3))
  assert model.apply(variables, images).shape == (2, 7)
  features = model.apply(variables, images, features=True)
  assert features.ndim == 2 and features.shape[0] == 2


def test_activation_changes_the_function():
  _, variables = init('conv4', (8, 8, 3))
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  relu = models.build_model(ml_collections.ConfigDict({'name': 'conv4'}), 10)
  tanh = models.build_model(ml_collections.ConfigDict({'name': 'conv4', 'activation': 'tanh'}), 10)
  assert not jnp.allclose(relu.apply(variables, images), tanh.apply(variables, images))


def test_unknown_model_option_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config.model.widht is not an option of 'conv4'; "
                                        r'its options are: activation, filters, hidden, pooled_convs'):
    init('conv4', (32, 32, 3), widht=3)


def test_unknown_activation_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config.model.activation='relu6' is not a valid choice; "
                                        r'choose one of: leaky_relu, relu, sigmoid, tanh'):
    init('conv4', (32, 32, 3), activation='relu6')
