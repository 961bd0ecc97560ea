"""Residual networks (He et al. 2015) with basic blocks, for small images."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import conv
from tinyimagenet_jax.models import layers

# Stem conv (kernel size, stride) by `ResNet.stem`.
STEMS = {'small': (3, 1), 'imagenet': (7, 2)}


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers plus a shortcut, then ReLU.

  The shortcut is the identity, or a 1x1 strided conv + BN (a projection)
  where the block changes resolution or width.
  """

  width: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    strides = (self.stride, self.stride)
    y = conv.Conv(self.width, (3, 3), strides, padding=1, use_bias=False, name='conv1')(x)
    y = nn.relu(layers.batch_norm(train, name='bn1')(y))
    y = conv.Conv(self.width, (3, 3), padding=1, use_bias=False, name='conv2')(y)
    y = layers.batch_norm(train, name='bn2')(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = conv.Conv(self.width, (1, 1), strides, use_bias=False, name='proj_conv')(x)
      x = layers.batch_norm(train, name='proj_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A stem (conv + BN + ReLU), stages of basic blocks, global average pool, FC.

  `stem='small'` (default): a 3x3 stride-1 conv, no max pool, the form used
  for 32x32 and 64x64 images. `stem='imagenet'`: torchvision's 7x7 stride-2
  conv then a 3x3 stride-2 max pool, so torchvision weights compute the same
  function (models/pretrained.py). Stage i has `stage_sizes[i]` blocks of
  `widths[i]` channels; every stage after the first halves the resolution in
  its first block. Defaults: ResNet-18 (2, 2, 2, 2 blocks of 64, 128, 256,
  512), 11,271,432 parameters with 200 classes.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'small'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    if self.stem not in STEMS:
      raise ConfigError(f'config.model.stem={self.stem!r} is not a valid choice; choose one'
                        ' of: ' + ', '.join(sorted(STEMS)))
    kernel, stride = STEMS[self.stem]
    x = conv.Conv(self.widths[0], (kernel, kernel), (stride, stride), padding=kernel // 2,
                use_bias=False, name='stem_conv')(x)
    x = nn.relu(layers.batch_norm(train, name='stem_bn')(x))
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, name=f'stage{stage + 1}_block{block + 1}')(x, train)
    x = x.mean(axis=(1, 2))
    if features:
      return x
    return nn.Dense(self.num_classes, name='head')(x)


class ResNetCNN(ResNet):
  """The third report's "ResNet + CNN": a conv layer, two residual blocks, a Dense layer.

  The report lists only those three parts; chosen here: the 3x3 stem with
  64 channels, one block of 64 and one of 128 channels (halving the
  resolution), global average pool, output layer.
  """

  stage_sizes: Sequence[int] = (1, 1)
  widths: Sequence[int] = (64, 128)
