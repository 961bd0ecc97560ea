"""AlexNet (Krizhevsky et al. 2012), single tower, for 224x224 input."""

import flax.linen as nn
import jax

from tinyimagenet_jax.models import conv
from tinyimagenet_jax.models import layers


class AlexNet(nn.Module):
  """Conv 96@11x11/4, 256@5x5, 384, 384, 256@3x3; FC 4096, 4096, output.

  Overlapping 3x3 stride-2 max pools after conv1, conv2 and conv5, ReLU
  everywhere, dropout 0.5 after both hidden FC layers. One tower with full
  connectivity (the paper split conv2, conv4 and conv5 over two GPUs), no
  local response normalisation. conv1 pads by 2 so 224 pixels give the
  paper's 55x55 maps. The last pool is an adaptive max pool to 6x6: at 224
  it is exactly the 3x3/2 pool on 13x13 maps, and it lets inputs from 31x31
  pixels up (CIFAR, Tiny ImageNet) reach the same 9216-wide FC input.
  """

  num_classes: int
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    x = nn.relu(conv.Conv(96, (11, 11), strides=(4, 4), padding=2, name='conv1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(conv.Conv(256, (5, 5), padding=2, name='conv2')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(conv.Conv(384, (3, 3), padding=1, name='conv3')(x))
    x = nn.relu(conv.Conv(384, (3, 3), padding=1, name='conv4')(x))
    x = nn.relu(conv.Conv(256, (3, 3), padding=1, name='conv5')(x))
    x = layers.adaptive_max_pool(x, (6, 6)).reshape(x.shape[0], -1)
    for name in ('fc6', 'fc7'):
      x = nn.relu(nn.Dense(4096, name=name)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if features:
      return x
    return nn.Dense(self.num_classes, name='fc8')(x)
