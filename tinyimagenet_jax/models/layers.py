"""Pieces shared by the model families: activations by name, pooling."""

from collections.abc import Callable

import flax.linen as nn
import jax

from tinyimagenet_jax.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'tanh': nn.tanh,
    'leaky_relu': nn.leaky_relu,
    'sigmoid': nn.sigmoid,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function called `name`, with the valid names on a typo."""
  if name not in ACTIVATIONS:
    raise ConfigError(
        f'config.model.activation={name!r} is not a valid choice; choose one'
        ' of: ' + ', '.join(sorted(ACTIVATIONS)))
  return ACTIVATIONS[name]


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (halves height and width)."""
  return nn.max_pool(x, (2, 2), strides=(2, 2))
