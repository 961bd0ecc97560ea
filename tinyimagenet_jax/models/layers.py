"""Pieces shared by the model families: activations by name, pooling, batch norm."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def adaptive_max_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Max pooling to a fixed `size` output, whatever the input size.

  Along an axis of n pixels, output i is the max over pixels
  [floor(i*n/out), ceil((i+1)*n/out)), as in torch's AdaptiveMaxPool2d;
  windows overlap where n does not divide evenly, and maps smaller than
  `size` repeat.
  """
  for axis, out in zip((1, 2), size):
    n = x.shape[axis]
    windows = [jax.lax.slice_in_dim(x, i * n // out, -(-(i + 1) * n // out), axis=axis)
               for i in range(out)]
    x = jnp.stack([window.max(axis=axis) for window in windows], axis=axis)
  return x


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """Batch norm over channels: batch statistics in training, running ones in evaluation.

  Momentum 0.9 (PyTorch's 0.1, Flax's default is 0.99), so the running
  statistics forget their initial values within a few dozen steps, which
  matters in the reports' short runs.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
