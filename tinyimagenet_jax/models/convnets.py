"""Plain convolutional networks from the reports."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from tinyimagenet_jax.models import layers


class Conv4(nn.Module):
  """The first report's 4-conv CNN (Krizhevsky 2012 Fig. 1 setting).

  Conv 3x3 SAME 64-128-256-256 with a 2x2 max pool after each of the first
  three, then FC 256 and FC classes; one activation for all hidden layers.
  2,012,298 parameters at 32x32x3 with 10 classes, as the report's table.
  """

  num_classes: int
  activation: str = 'relu'
  filters: Sequence[int] = (64, 128, 256, 256)
  pooled_convs: int = 3
  hidden: int = 256

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    act = layers.activation(self.activation)
    for index, width in enumerate(self.filters):
      x = act(nn.Conv(width, (3, 3), padding='SAME')(x))
      if index < self.pooled_convs:
        x = layers.max_pool_2x2(x)
    x = act(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    if features:
      return x
    return nn.Dense(self.num_classes)(x)
