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


def _even_crop(x: jax.Array) -> jax.Array:
  """`x` without its last row and column where they are odd (what VALID pooling drops)."""
  return x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2]


def _quarters(x: jax.Array) -> tuple[jax.Array, ...]:
  """The four pixels of every 2x2 window, in row-major order, as four half-size maps."""
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return (windows[:, :, 0, :, 0], windows[:, :, 0, :, 1],
          windows[:, :, 1, :, 0], windows[:, :, 1, :, 1])


@jax.custom_vjp
def _max_pool_even(x: jax.Array) -> jax.Array:
  top_left, top_right, bottom_left, bottom_right = _quarters(x)
  return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))


def _max_pool_even_forward(x: jax.Array):
  pooled = _max_pool_even(x)
  return pooled, (x, pooled)


def _max_pool_even_backward(residuals, grad: jax.Array):
  """Each window's gradient to its first maximum in row-major order, as XLA's own rule.

  Written as compares and selects that fuse into one loop; XLA:CPU's
  select-and-scatter for the same gradient was about 5x slower (issue 7).
  """
  x, pooled = residuals
  *leading, last = _quarters(x)
  taken = jnp.zeros(pooled.shape, bool)
  parts = []
  for quarter in leading:
    first = (quarter == pooled) & ~taken
    taken = taken | first
    parts.append(jnp.where(first, grad, 0))
  parts.append(jnp.where(taken, 0, grad))
  top = jnp.stack(parts[:2], axis=3)
  bottom = jnp.stack(parts[2:], axis=3)
  return (jnp.stack([top, bottom], axis=2).reshape(x.shape),)


_max_pool_even.defvjp(_max_pool_even_forward, _max_pool_even_backward)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (halves height and width; an odd last row is dropped).

  Same values and gradients as `nn.max_pool(x, (2, 2), (2, 2))`, faster on CPU.
  """
  return _max_pool_even(_even_crop(x))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2, as a reshape-mean (its gradient fuses on CPU)."""
  x = _even_crop(x)
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


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
