"""Plain convolutional networks from the reports."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from tinyimagenet_jax.models import conv
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
      x = act(conv.Conv(width, (3, 3), padding='SAME')(x))
      if index < self.pooled_convs:
        x = layers.max_pool_2x2(x)
    x = act(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    if features:
      return x
    return nn.Dense(self.num_classes)(x)


class PlainCNN(nn.Module):
  """Stages of convolutions, each stage ending in a 2x2 max pool, then an MLP head.

  `stages` lists per stage its convolutions as (kernel size, filters); each
  conv (`padding` 'SAME' or 'VALID') is followed by batch norm (optional)
  and the activation. The hidden Dense layers each get dropout;
  `stage_dropout` drops after every pool. The registered models below are
  this class with the reports' defaults.
  """

  num_classes: int
  stages: Sequence[Sequence[tuple[int, int]]]
  hidden: Sequence[int] = (256,)
  activation: str = 'relu'
  batch_norm: bool = False
  dropout: float = 0.5
  stage_dropout: float = 0.0
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False) -> jax.Array:
    act = layers.activation(self.activation)
    for stage in self.stages:
      for kernel, width in stage:
        x = conv.Conv(width, (kernel, kernel), padding=self.padding)(x)
        if self.batch_norm:
          x = layers.batch_norm(train)(x)
        x = act(x)
      x = layers.max_pool_2x2(x)
      if self.stage_dropout:
        x = nn.Dropout(self.stage_dropout, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    self.sow('intermediates', 'flatten', x)  # the first dense layer's input (t-SNE)
    for width in self.hidden:
      x = nn.Dropout(self.dropout, deterministic=not train)(act(nn.Dense(width)(x)))
    if features:
      return x
    return nn.Dense(self.num_classes)(x)


class Conv3BN(PlainCNN):
  """The second report's CIFAR-10 CNN: conv 3x3 32-64-128, each BN + ReLU + pool.

  Then FC 512 + ReLU + dropout and the output layer; `batch_norm` and
  `dropout=0.0` switch each regulariser off (the report's 2x2 table). The
  report does not state its dropout rate; 0.5 is the usual one. Convs keep
  their bias (the report's code is unreadable; TensorFlow's conv layers have
  one by default). 1,147,914 parameters at 32x32x3 with 10 classes.
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (((3, 32),), ((3, 64),), ((3, 128),))
  hidden: Sequence[int] = (512,)
  batch_norm: bool = True


class CNN2(PlainCNN):
  """The third report's 2-layer CNN: two 3x3 stride-1 padding-1 convs with max pools.

  The report names kernel, stride, padding, max pooling and dropout but no
  widths; chosen here: conv 32 and 64, dropout 0.25 after each pool, FC 256
  with dropout 0.5, output.
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (((3, 32),), ((3, 64),))
  stage_dropout: float = 0.25


class CNNMulti(PlainCNN):
  """The third report's multi-layer CNN: the 2-layer CNN made four stages deep.

  No widths in the report; chosen here: 3x3 convs 32-64-128-256, each with a
  max pool and dropout 0.25, then FC 512 with dropout 0.5, output.
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (
      ((3, 32),), ((3, 64),), ((3, 128),), ((3, 256),))
  hidden: Sequence[int] = (512,)
  stage_dropout: float = 0.25


# The fifth report's Table 1 came out garbled: the rows of M2-M4 share one
# first line, cut off after "ConvReLU(F3-64) -> CONVREU(F3-6", and M1's first
# line repeats "ConvReLU(F3-16)" in a loop. Reading the cut-off fragment and the
# loop as extraction artefacts, not layers, makes each row agree with the text
# of section 4.1, as each docstring says. Convs are SAME-padded (the report does
# not say); dropout 0.5 follows FCReLU(256), the one fully connected layer that
# is not the last (sections 4.4 and 5.1). FC(200) is FC(num_classes) here.


class TinyM1(PlainCNN):
  """The fifth report's M1, "three convolutional layers and one fully connected":

  ConvReLU(F5-16) -> MaxPool       row, line 1 (before the loop)
  ConvReLU(F3-16) -> MaxPool       row, line 1
  ConvReLU(F3-32) -> MaxPool       row, line 2
  FCReLU(256) -> dropout -> FC     row, line 2
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (((5, 16),), ((3, 16),), ((3, 32),))


class TinyM2(PlainCNN):
  """The fifth report's M2, four convs: M1's first two stages, each conv doubled and wider.

  ConvReLU(F5-32) -> ConvReLU(F5-32) -> MaxPool    row, line 1
  ConvReLU(F3-64) -> ConvReLU(F3-64) -> MaxPool    line 1's last conv, line 2's first
  FCReLU(256) -> dropout -> FC                     row, line 2
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (((5, 32), (5, 32)), ((3, 64), (3, 64)))


class TinyM3(PlainCNN):
  """The fifth report's M3, "4 layers deep": M2's first stage, then M1's one-conv stages.

  ConvReLU(F5-32) -> ConvReLU(F5-32) -> MaxPool    row, line 1
  ConvReLU(F3-64) -> MaxPool                       line 1's last conv, line 2's first pool
  ConvReLU(F3-128) -> MaxPool                      row, line 2
  FCReLU(256) -> dropout -> FC                     row, line 2
  Larger than M2 in filters (128), not in parameters: its third pool
  shrinks the FC input.
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (
      ((5, 32), (5, 32)), ((3, 64),), ((3, 128),))


class TinyM4(PlainCNN):
  """The fifth report's M4, the deepest (six convs, most filters), pools moved vs M3.

  ConvReLU(F5-32) -> ConvReLU(F5-32) -> MaxPool    row, line 1
  ConvReLU(F3-64) -> ConvReLU(F3-64) -> MaxPool    line 1's last conv, line 2's first
  ConvReLU(F3-64) -> ConvReLU(F3-128) -> MaxPool   row, lines 2 and 3
  FCReLU(256) -> dropout -> FC                     row, line 3
  """

  stages: Sequence[Sequence[tuple[int, int]]] = (
      ((5, 32), (5, 32)), ((3, 64), (3, 64)), ((3, 64), (3, 128)))
