"""VGG16 (Simonyan and Zisserman 2014), with Keras's layer names."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import conv
from tinyimagenet_jax.models import layers

# (filters, convs) per block; a 2x2 max pool ends each block.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VGG16(nn.Module):
  """13 3x3 ReLU convs in 5 pooled blocks, then a flatten + Dense classifier.

  Layers are named as in Keras (block1_conv1 ... block5_conv3, fc1, fc2,
  predictions) so Keras weights map by name and blocks freeze by prefix. At
  the third report's 64x64 input the conv part has 14,714,688 parameters (its
  table). The report shows only that conv part; the default classifier is
  the paper's (4096, 4096 with dropout 0.5), and `hidden=()` puts the output
  layer right on the flattened 2x2x512 maps. `batch_norm` adds BN after
  every conv (VGG16-BN). `widths` sets each block's filters (narrow ones
  for quick tests); the layer names, and so freezing by prefix, stay.
  """

  num_classes: int
  hidden: Sequence[int] = (4096, 4096)
  dropout: float = 0.5
  batch_norm: bool = False
  widths: Sequence[int] = tuple(width for width, _ in VGG16_BLOCKS)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    if len(self.widths) != len(VGG16_BLOCKS):
      raise ConfigError(f'config.model.widths={tuple(self.widths)!r} must give {len(VGG16_BLOCKS)}'
                        ' filter counts, one per VGG16 block, e.g. (64, 128, 256, 512, 512).')
    for block, (width, (_, convs)) in enumerate(zip(self.widths, VGG16_BLOCKS), start=1):
      for index in range(1, convs + 1):
        x = conv.Conv(width, (3, 3), padding='SAME', name=f'block{block}_conv{index}')(x)
        if self.batch_norm:
          x = layers.batch_norm(train, name=f'block{block}_bn{index}')(x)
        x = nn.relu(x)
      x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for index, width in enumerate(self.hidden, start=1):
      x = nn.relu(nn.Dense(width, name=f'fc{index}')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if features:
      return x
    return nn.Dense(self.num_classes, name='predictions')(x)
