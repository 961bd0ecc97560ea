"""LeNet-5 (LeCun et al. 1998)."""

import flax.linen as nn
import jax

from tinyimagenet_jax.models import conv
from tinyimagenet_jax.models import layers


class LeNet5(nn.Module):
  """C1 6@5x5, S2 pool, C3 16@5x5, S4 pool, C5 120, F6 84, output.

  Valid convolutions as in the paper; C5 is a dense layer over the flattened
  S4 maps, which equals the paper's 5x5 convolution at 32x32 input and lets
  any input of at least 12x12 pixels work. tanh and average pooling by
  default; `activation='relu'` and `pool='max'` give the modern variant.
  `batch_norm=True` and `extra_dense=<width>` give the fourth report's
  "LeNet + FC + batch norm": batch norm after S4, and a Dense layer F7 of that
  width after F6 (the report gives no width; 84 repeats F6's).
  """

  num_classes: int
  activation: str = 'tanh'
  pool: str = 'avg'
  batch_norm: bool = False
  extra_dense: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    act = layers.activation(self.activation)
    pool = layers.avg_pool_2x2 if self.pool == 'avg' else layers.max_pool_2x2
    x = pool(act(conv.Conv(6, (5, 5), padding='VALID', name='C1')(x)))
    x = pool(act(conv.Conv(16, (5, 5), padding='VALID', name='C3')(x)))
    if self.batch_norm:
      x = layers.batch_norm(train, name='S4_norm')(x)
    x = act(nn.Dense(120, name='C5')(x.reshape(x.shape[0], -1)))
    x = act(nn.Dense(84, name='F6')(x))
    if self.extra_dense:
      x = act(nn.Dense(self.extra_dense, name='F7')(x))
    if features:
      return x
    return nn.Dense(self.num_classes, name='output')(x)
