"""The benchmarked Flax models written in Keras (TensorFlow backend), layer for layer.

Keras is what the reports trained with. Layers are NHWC and named as the Flax
modules, kernels are HWIO and (in, out) in both, and Flatten is HWC order, so
`load_flax_variables` maps the arrays unchanged. Keras (and TensorFlow) is
imported only when a model is built, so importing this module stays cheap.
"""

import os
from collections.abc import Sequence

import numpy as np


def import_keras():
  """Keras on its TensorFlow backend (the one the reports used); an error for any other."""
  os.environ['KERAS_BACKEND'] = 'tensorflow'
  import keras  # pylint: disable=import-outside-toplevel
  if keras.backend.backend() != 'tensorflow':
    raise RuntimeError(f'keras was already imported with the {keras.backend.backend()!r}'
                       ' backend; the benchmark needs tensorflow (set KERAS_BACKEND first).')
  return keras


def batch_norm(keras, name: str):
  """Batch norm as `layers.batch_norm`: momentum 0.9 and epsilon 1e-5 in both frameworks."""
  return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def conv4(num_classes: int, image_size: int, filters: Sequence[int] = (64, 128, 256, 256),
          pooled_convs: int = 3, hidden: int = 256):
  """`convnets.Conv4` with ReLU: 3x3 SAME convs 64-128-256-256, 2x2 max pool after three, FC."""
  keras = import_keras()
  inputs = keras.Input((image_size, image_size, 3))
  x = inputs
  for index, width in enumerate(filters):
    x = keras.layers.Conv2D(width, 3, padding='same', activation='relu', name=f'Conv_{index}')(x)
    if index < pooled_convs:
      x = keras.layers.MaxPooling2D(2)(x)
  x = keras.layers.Dense(hidden, activation='relu', name='Dense_0')(keras.layers.Flatten()(x))
  return keras.Model(inputs, keras.layers.Dense(num_classes, name='Dense_1')(x))


def lenet5(num_classes: int, image_size: int):
  """`lenet.LeNet5` as registered: tanh, 2x2 average pools, VALID 5x5 convs C1 6 and C3 16."""
  keras = import_keras()
  inputs = keras.Input((image_size, image_size, 3))
  x = keras.layers.Conv2D(6, 5, activation='tanh', name='C1')(inputs)
  x = keras.layers.Conv2D(16, 5, activation='tanh', name='C3')(keras.layers.AveragePooling2D(2)(x))
  x = keras.layers.Flatten()(keras.layers.AveragePooling2D(2)(x))
  x = keras.layers.Dense(120, activation='tanh', name='C5')(x)
  x = keras.layers.Dense(84, activation='tanh', name='F6')(x)
  return keras.Model(inputs, keras.layers.Dense(num_classes, name='output')(x))


def conv3x3(keras, x, width: int, stride: int, name: str):
  """A bias-free 3x3 conv padded by one pixel on every side, as Flax's `padding=1`.

  Keras's 'same' pads a stride-2 conv on the bottom and right only, so the
  padding is explicit.
  """
  if stride == 1:
    return keras.layers.Conv2D(width, 3, padding='same', use_bias=False, name=name)(x)
  x = keras.layers.ZeroPadding2D(1)(x)
  return keras.layers.Conv2D(width, 3, stride, use_bias=False, name=name)(x)


def basic_block(keras, x, width: int, stride: int, name: str):
  """`resnet.BasicBlock`: conv-BN-ReLU, conv-BN, plus identity or 1x1 projection, ReLU."""
  y = conv3x3(keras, x, width, stride, f'{name}.conv1')
  y = keras.layers.ReLU()(batch_norm(keras, f'{name}.bn1')(y))
  y = batch_norm(keras, f'{name}.bn2')(conv3x3(keras, y, width, 1, f'{name}.conv2'))
  if stride != 1 or x.shape[-1] != width:
    x = keras.layers.Conv2D(width, 1, stride, use_bias=False, name=f'{name}.proj_conv')(x)
    x = batch_norm(keras, f'{name}.proj_bn')(x)
  return keras.layers.ReLU()(keras.layers.Add()([x, y]))


def resnet(num_classes: int, image_size: int, stage_sizes: Sequence[int] = (2, 2, 2, 2),
           widths: Sequence[int] = (64, 128, 256, 512)):
  """`resnet.ResNet` with its 'small' stem: 3x3 conv-BN-ReLU, basic-block stages, mean, FC."""
  keras = import_keras()
  inputs = keras.Input((image_size, image_size, 3))
  x = conv3x3(keras, inputs, widths[0], 1, 'stem_conv')
  x = keras.layers.ReLU()(batch_norm(keras, 'stem_bn')(x))
  for stage, (blocks, width) in enumerate(zip(stage_sizes, widths)):
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      x = basic_block(keras, x, width, stride, f'stage{stage + 1}_block{block + 1}')
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(num_classes, name='head')(x))


MODELS = {'conv4': conv4, 'lenet5': lenet5, 'resnet18': resnet}


def parameter_count(model) -> int:
  """Trainable parameters (batch-norm moving statistics are non-trainable, not counted)."""
  return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


# Keras's weight order per layer type, as Flax (collection, leaf) names.
FLAX_LEAVES = {
    'Conv2D': (('params', 'kernel'), ('params', 'bias')),
    'Dense': (('params', 'kernel'), ('params', 'bias')),
    'BatchNormalization': (('params', 'scale'), ('params', 'bias'),
                           ('batch_stats', 'mean'), ('batch_stats', 'var')),
}


def load_flax_variables(model, variables: dict) -> None:
  """Copies Flax variables ({'params', 'batch_stats'}) into the Keras twin `model`, in place."""
  for layer in model.layers:
    leaves = FLAX_LEAVES.get(type(layer).__name__)
    if not leaves:
      continue
    path = layer.name.split('.')
    arrays = []
    for collection, leaf in leaves[:len(layer.get_weights())]:
      node = variables[collection]
      for key in path:
        node = node[key]
      arrays.append(np.asarray(node[leaf], np.float32))
    layer.set_weights(arrays)
