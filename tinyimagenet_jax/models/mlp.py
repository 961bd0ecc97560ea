"""Softmax regression and multi-layer perceptrons."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from tinyimagenet_jax.models import layers


class Linear(nn.Module):
  """Softmax regression (the third report's linear model): flatten, one Dense."""

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    if features:
      return x
    return nn.Dense(self.num_classes)(x)


class MLP(nn.Module):
  """Flatten, then Dense + activation (+ dropout) per hidden size, then output.

  The default is the reports' 2-layer perceptron: one hidden layer of 1024
  ReLU units. The fourth report's 3-layer perceptron with dropout adds a
  hidden layer and dropout without giving their sizes; e.g. hidden=(1024, 512),
  dropout=0.5.
  """

  num_classes: int
  hidden: Sequence[int] = (1024,)
  activation: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    act = layers.activation(self.activation)
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.Dropout(self.dropout, deterministic=not train)(act(nn.Dense(width)(x)))
    if features:
      return x
    return nn.Dense(self.num_classes)(x)
