"""Parameter counts, output shapes, train/eval behaviour and option errors of the models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyimagenet_jax import models
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import conv as conv_lib
from tinyimagenet_jax.models import layers


def build(name: str, num_classes: int = 10, **options) -> nn.Module:
  """The registered model `name` as a config would build it."""
  return models.build_model(ml_collections.ConfigDict({'name': name, **options}), num_classes)


def init_shapes(name: str, shape: tuple[int, ...], num_classes: int = 10, **options):
  """The model and its variables as shapes only: nothing is computed or allocated."""
  model = build(name, num_classes, **options)
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, *shape))))


def init(name: str, shape: tuple[int, ...], num_classes: int = 10, **options):
  """The model and variables drawn with numpy: params N(0, 0.05^2), BN statistics as at init.

  Cheaper than `model.init`, whose random initialisers JAX compiles once per
  parameter shape (seconds per model on a CPU).
  """
  model, shapes = init_shapes(name, shape, num_classes, **options)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    if path[-1].key == 'mean':
      return np.zeros(leaf.shape, np.float32)
    if path[-1].key == 'var':
      return np.ones(leaf.shape, np.float32)
    return 0.05 * rng.standard_normal(leaf.shape, np.float32)

  return model, jax.tree_util.tree_map_with_path(fill, shapes)


def count(variables) -> int:
  """How many trainable parameters `variables` hold."""
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


def conv(kernel: int, c_in: int, c_out: int, bias: bool = True) -> int:
  """Parameters of a square conv layer, by hand."""
  return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def dense(n_in: int, n_out: int) -> int:
  """Parameters of a Dense layer, by hand."""
  return n_in * n_out + n_out


def bn(channels: int) -> int:
  """Parameters of batch norm: scale and bias (its running statistics are not params)."""
  return 2 * channels


def basic_block(c_in: int, c_out: int) -> int:
  """Parameters of a ResNet basic block, with a projection where the width changes."""
  projection = conv(1, c_in, c_out, bias=False) + bn(c_out) if c_in != c_out else 0
  convs = conv(3, c_in, c_out, bias=False) + conv(3, c_out, c_out, bias=False)
  return convs + 2 * bn(c_out) + projection


RESNET18_200 = (
    conv(3, 3, 64, False) + bn(64)
    + 2 * basic_block(64, 64)
    + basic_block(64, 128) + basic_block(128, 128)
    + basic_block(128, 256) + basic_block(256, 256)
    + basic_block(256, 512) + basic_block(512, 512)
    + dense(512, 200))

# Keras's VGG16 table in the third report, 64x64 input: (layer, output shape, params).
VGG16_REPORT_TABLE = [
    ('block1_conv1', (64, 64, 64), 1792), ('block1_conv2', (64, 64, 64), 36928),
    ('block2_conv1', (32, 32, 128), 73856), ('block2_conv2', (32, 32, 128), 147584),
    ('block3_conv1', (16, 16, 256), 295168), ('block3_conv2', (16, 16, 256), 590080),
    ('block3_conv3', (16, 16, 256), 590080), ('block4_conv1', (8, 8, 512), 1180160),
    ('block4_conv2', (8, 8, 512), 2359808), ('block4_conv3', (8, 8, 512), 2359808),
    ('block5_conv1', (4, 4, 512), 2359808), ('block5_conv2', (4, 4, 512), 2359808),
    ('block5_conv3', (4, 4, 512), 2359808),
]


@pytest.mark.parametrize('name, shape, num_classes, options, expected', [
    ('conv4', (32, 32, 3), 10, {}, 2_012_298),  # the first report's table
    ('lenet5', (32, 32, 1), 10, {}, 61_706),  # LeCun 1998 with a full C3
    ('lenet5', (32, 32, 3), 100, {}, 69_656),
    ('lenet5', (32, 32, 3), 100, {'batch_norm': True, 'extra_dense': 84},
     69_656 + bn(16) + dense(84, 84)),
    ('linear', (64, 64, 3), 200, {}, dense(64 * 64 * 3, 200)),
    ('mlp', (32, 32, 3), 10, {}, dense(3072, 1024) + dense(1024, 10)),
    ('mlp', (32, 32, 3), 100, {'hidden': (1024, 512), 'dropout': 0.5},
     dense(3072, 1024) + dense(1024, 512) + dense(512, 100)),
    ('conv3_bn', (32, 32, 3), 10, {},
     conv(3, 3, 32) + bn(32) + conv(3, 32, 64) + bn(64) + conv(3, 64, 128) + bn(128)
     + dense(4 * 4 * 128, 512) + dense(512, 10)),
    ('conv3_bn', (32, 32, 3), 10, {'batch_norm': False, 'dropout': 0.0},
     conv(3, 3, 32) + conv(3, 32, 64) + conv(3, 64, 128) + dense(4 * 4 * 128, 512)
     + dense(512, 10)),
    ('cnn2', (64, 64, 3), 200, {},
     conv(3, 3, 32) + conv(3, 32, 64) + dense(16 * 16 * 64, 256) + dense(256, 200)),
    ('cnn_multi', (64, 64, 3), 200, {},
     conv(3, 3, 32) + conv(3, 32, 64) + conv(3, 64, 128) + conv(3, 128, 256)
     + dense(4 * 4 * 256, 512) + dense(512, 200)),
    ('tiny_m1', (64, 64, 3), 200, {},
     conv(5, 3, 16) + conv(3, 16, 16) + conv(3, 16, 32) + dense(8 * 8 * 32, 256)
     + dense(256, 200)),
    ('tiny_m2', (64, 64, 3), 200, {},
     conv(5, 3, 32) + conv(5, 32, 32) + conv(3, 32, 64) + conv(3, 64, 64)
     + dense(16 * 16 * 64, 256) + dense(256, 200)),
    ('tiny_m3', (64, 64, 3), 200, {},
     conv(5, 3, 32) + conv(5, 32, 32) + conv(3, 32, 64) + conv(3, 64, 128)
     + dense(8 * 8 * 128, 256) + dense(256, 200)),
    ('tiny_m4', (64, 64, 3), 200, {},
     conv(5, 3, 32) + conv(5, 32, 32) + conv(3, 32, 64) + conv(3, 64, 64) + conv(3, 64, 64)
     + conv(3, 64, 128) + dense(8 * 8 * 128, 256) + dense(256, 200)),
    ('vgg16', (64, 64, 3), 200, {},
     14_714_688 + dense(2 * 2 * 512, 4096) + dense(4096, 4096) + dense(4096, 200)),
    ('vgg16', (64, 64, 3), 200, {'hidden': (), 'batch_norm': True},
     14_714_688 + bn(64) * 2 + bn(128) * 2 + bn(256) * 3 + bn(512) * 6 + dense(2048, 200)),
    ('vgg16', (224, 224, 3), 1000, {}, 138_357_544),  # Keras's VGG16 with its top
    ('alexnet', (224, 224, 3), 1000, {},
     conv(11, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384)
     + conv(3, 384, 256) + dense(6 * 6 * 256, 4096) + dense(4096, 4096) + dense(4096, 1000)),
    ('alexnet', (64, 64, 3), 200, {},  # the FC input is 6x6x256 at every input size
     conv(11, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384)
     + conv(3, 384, 256) + dense(6 * 6 * 256, 4096) + dense(4096, 4096) + dense(4096, 200)),
    ('resnet18', (64, 64, 3), 200, {}, RESNET18_200),
    ('resnet18', (224, 224, 3), 1000, {'stem': 'imagenet'}, 11_689_512),  # torchvision's
    ('resnet_cnn', (64, 64, 3), 200, {},
     conv(3, 3, 64, False) + bn(64) + basic_block(64, 64) + basic_block(64, 128)
     + dense(128, 200)),
])
def test_parameter_counts(name, shape, num_classes, options, expected):
  assert count(init_shapes(name, shape, num_classes, **options)[1]) == expected


def test_resnet18_differs_from_torchvision_only_in_stem_and_head():
  """torchvision's resnet18 (1000 classes, 7x7 stem) has 11,689,512 parameters."""
  torchvision = 11_689_512
  assert RESNET18_200 == 11_271_432
  assert RESNET18_200 == (torchvision - conv(7, 3, 64, False) + conv(3, 3, 64, False)
                          - dense(512, 1000) + dense(512, 200))


def test_vgg16_conv_layers_match_the_report_table():
  _, variables = init_shapes('vgg16', (64, 64, 3), 200)
  params = variables['params']
  convs = [(name, count({'params': params[name]})) for name in params if 'conv' in name]
  assert convs == [(name, size) for name, _, size in VGG16_REPORT_TABLE]
  assert sum(size for _, size in convs) == 14_714_688  # the report's total


def test_conv4_layer_shapes_match_the_report():
  _, variables = init_shapes('conv4', (32, 32, 3))
  kernels = [variables['params'][f'Conv_{i}']['kernel'].shape for i in range(4)]
  assert kernels == [(3, 3, 3, 64), (3, 3, 64, 128), (3, 3, 128, 256), (3, 3, 256, 256)]
  assert variables['params']['Dense_0']['kernel'].shape == (4 * 4 * 256, 256)


@pytest.mark.parametrize('name, convs, fc_input', [
    ('tiny_m1', [(5, 3, 16), (3, 16, 16), (3, 16, 32)], 8 * 8 * 32),
    ('tiny_m2', [(5, 3, 32), (5, 32, 32), (3, 32, 64), (3, 64, 64)], 16 * 16 * 64),
    ('tiny_m3', [(5, 3, 32), (5, 32, 32), (3, 32, 64), (3, 64, 128)], 8 * 8 * 128),
    ('tiny_m4', [(5, 3, 32), (5, 32, 32), (3, 32, 64), (3, 64, 64), (3, 64, 64), (3, 64, 128)],
     8 * 8 * 128),
])
def test_tiny_models_follow_the_reading_of_table_1(name, convs, fc_input):
  _, variables = init_shapes(name, (64, 64, 3), 200)
  params = variables['params']
  kernels = [params[f'Conv_{i}']['kernel'].shape for i in range(len(convs))]
  assert kernels == [(k, k, c_in, c_out) for k, c_in, c_out in convs]
  assert f'Conv_{len(convs)}' not in params
  assert params['Dense_0']['kernel'].shape == (fc_input, 256)
  assert params['Dense_1']['kernel'].shape == (256, 200)


FEATURE_WIDTHS = {
    'alexnet': 4096, 'cnn2': 256, 'cnn_multi': 512, 'conv3_bn': 512, 'conv4': 256,
    'lenet5': 84, 'mlp': 1024, 'resnet18': 512, 'resnet_cnn': 128, 'tiny_m1': 256,
    'tiny_m2': 256, 'tiny_m3': 256, 'tiny_m4': 256, 'vgg16': 4096,
}


def test_every_registered_model_has_a_feature_width():
  assert set(FEATURE_WIDTHS) | {'linear'} == set(models.MODELS)


@pytest.mark.parametrize('name, size', [
    *[(name, size) for name in sorted(models.MODELS) for size in (32, 64)],
    ('alexnet', 224), ('vgg16', 224)])
def test_logits_and_features_shapes(name, size):
  model, variables = init_shapes(name, (size, size, 3), num_classes=7)
  images = jnp.ones((2, size, size, 3))
  assert jax.eval_shape(lambda v: model.apply(v, images), variables).shape == (2, 7)
  features = jax.eval_shape(lambda v: model.apply(v, images, features=True), variables)
  assert features.shape == (2, FEATURE_WIDTHS.get(name, size * size * 3))


@pytest.mark.parametrize('name, options', [
    ('lenet5', {'batch_norm': True, 'extra_dense': 84}),
    ('conv3_bn', {'stage_dropout': 0.25}),  # PlainCNN: batch norm and both dropouts
    ('vgg16', {'hidden': (32,), 'batch_norm': True}),
    ('alexnet', {}),
    ('resnet_cnn', {}),
])
def test_train_mode_differs_from_eval_mode(name, options):
  """Dropout and batch norm act in training only, and training updates the BN statistics."""
  model, variables = init(name, (32, 32, 3), **options)
  images = np.random.default_rng(1).standard_normal((2, 32, 32, 3), np.float32)

  @jax.jit
  def both_modes(variables, images):
    # An 'rbg' key: its random bits compile far faster on a CPU than threefry's.
    trained = model.apply(variables, images, train=True, mutable=['batch_stats'],
                          rngs={'dropout': jax.random.key(2, impl='rbg')})
    return model.apply(variables, images), trained

  evaluated, (trained, updates) = both_modes(variables, images)
  assert not np.allclose(trained, evaluated)
  if 'batch_stats' in variables:
    old, new = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updates['batch_stats'])
    assert len(new) == len(old) > 0
    assert all(not np.allclose(a, b) for a, b in zip(old, new))
  else:
    assert not updates


def test_adaptive_max_pool_is_alexnets_pool_at_13_and_repeats_small_maps():
  maps = np.random.default_rng(0).standard_normal((2, 13, 13, 4), np.float32)
  np.testing.assert_array_equal(layers.adaptive_max_pool(maps, (6, 6)),
                                nn.max_pool(maps, (3, 3), strides=(2, 2)))
  pixel = jnp.arange(4.0).reshape(1, 1, 1, 4)
  np.testing.assert_array_equal(layers.adaptive_max_pool(pixel, (6, 6)),
                                jnp.broadcast_to(pixel, (1, 6, 6, 4)))


@pytest.mark.parametrize('shape', [(3, 8, 8, 4), (2, 7, 9, 3)])
def test_max_pool_2x2_matches_flax_values_and_gradients_with_ties(shape):
  # Rounded ReLU outputs tie often (zeros, equal halves): the gradient must go to
  # the same pixel of each window as XLA's select-and-scatter rule picks.
  x = jnp.round(jax.nn.relu(jax.random.normal(jax.random.key(0), shape)) * 2) / 2
  reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  pooled, pullback = jax.vjp(layers.max_pool_2x2, x)
  expected, expected_pullback = jax.vjp(reference, x)
  grad = jax.random.normal(jax.random.key(1), pooled.shape)
  np.testing.assert_array_equal(pooled, expected)
  np.testing.assert_array_equal(pullback(grad)[0], expected_pullback(grad)[0])


@pytest.mark.parametrize('shape', [(3, 8, 8, 4), (2, 7, 9, 3)])
def test_avg_pool_2x2_matches_flax_values_and_gradients(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  reference = lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))
  pooled, pullback = jax.vjp(layers.avg_pool_2x2, x)
  expected, expected_pullback = jax.vjp(reference, x)
  grad = jax.random.normal(jax.random.key(1), pooled.shape)
  np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(pullback(grad)[0], expected_pullback(grad)[0], rtol=1e-6, atol=1e-6)


def test_resnet18_projects_only_where_a_stage_starts():
  _, variables = init_shapes('resnet18', (64, 64, 3), 200)
  projected = sorted(name for name, block in variables['params'].items() if 'proj_conv' in block)
  assert projected == ['stage2_block1', 'stage3_block1', 'stage4_block1']


def test_imagenet_stem_quarters_the_resolution_before_the_first_stage():
  model, variables = init_shapes('resnet18', (64, 64, 3), 200, stem='imagenet')
  assert variables['params']['stem_conv']['kernel'].shape == (7, 7, 3, 64)
  _, state = jax.eval_shape(
      lambda v: model.apply(v, jnp.ones((2, 64, 64, 3)), capture_intermediates=True), variables)
  stage1 = state['intermediates']['stage1_block1']['__call__'][0]
  assert stage1.shape == (2, 16, 16, 64)


def test_unknown_resnet_stem_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config\.model\.stem='cifar'.*imagenet, small"):
    init_shapes('resnet18', (32, 32, 3), stem='cifar')


def test_activation_changes_the_function():
  _, variables = init('conv4', (8, 8, 3))
  images = np.random.default_rng(1).standard_normal((2, 8, 8, 3), np.float32)
  relu = build('conv4')
  tanh = build('conv4', activation='tanh')
  assert not jnp.allclose(relu.apply(variables, images), tanh.apply(variables, images))


def test_unknown_model_name_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config\.model\.name='vgg'.*alexnet, cnn2, .*, vgg16"):
    build('vgg')


def test_unknown_model_option_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config\.model\.widht.*'conv4'.*"
                                        r'activation, filters, hidden, pooled_convs'):
    init('conv4', (32, 32, 3), widht=3)


def test_unknown_activation_names_the_valid_ones():
  with pytest.raises(ConfigError, match=r"config\.model\.activation='relu6'.*"
                                        r'leaky_relu, relu, sigmoid, tanh'):
    init('conv4', (32, 32, 3), activation='relu6')


# (input NHWC, kernel HWIO, explicit pads): maps smaller than their kernel, as the end of
# conv4 on 8x8 digits (2x2 and 1x1 under 3x3), AlexNet at 32x32 (3x3 under 5x5), and
# asymmetric or non-square cases.
SMALLER_THAN_KERNEL = [((4, 2, 2, 3), (3, 3, 3, 5), ((1, 1), (1, 1))),
                       ((4, 1, 1, 6), (3, 3, 6, 5), ((1, 1), (1, 1))),
                       ((2, 3, 3, 3), (5, 5, 3, 4), ((2, 2), (2, 2))),
                       ((2, 2, 2, 3), (3, 3, 3, 4), ((2, 0), (0, 1))),
                       ((2, 2, 5, 2), (3, 3, 2, 3), ((1, 1), (0, 0)))]


@pytest.mark.parametrize('x_shape, w_shape, pads', SMALLER_THAN_KERNEL)
def test_a_map_smaller_than_its_kernel_convolves_as_lax_does_values_and_gradients(
    x_shape, w_shape, pads):
  """The matrix product gives lax's convolution and both gradients, to float rounding."""
  keys = jax.random.split(jax.random.key(0), 3)
  x, w = jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], w_shape)
  assert conv_lib.smaller_than_kernel(x_shape, w_shape, (1, 1))

  def loss(fn):
    exact = lambda x, w: fn(x, w, (1, 1), pads, dimension_numbers=conv_lib.NHWC,
                             precision=jax.lax.Precision.HIGHEST)
    return lambda x, w: jnp.sum(jnp.sin(exact(x, w)) * jnp.arange(exact(x, w).size).reshape(
        exact(x, w).shape))

  want = jax.value_and_grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)
  as_conv = lambda x, w, strides, pads, **_: conv_lib.conv(x, w, strides, pads)
  got = jax.value_and_grad(loss(as_conv), argnums=(0, 1))(x, w)
  for leaf, reference in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(leaf, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_only_maps_smaller_than_the_kernel_become_a_matrix_product():
  """XLA:CPU swaps the operands of such a convolution and runs it 10-70x slower: its program
  holds a dot and no convolution; a larger map, a stride or another layout stay lax's."""
  layer = conv_lib.Conv(8, (3, 3), padding='SAME')
  small, large = jnp.ones((2, 2, 2, 4)), jnp.ones((2, 4, 4, 4))
  variables = layer.init(jax.random.key(0), small)
  program = lambda x: jax.jit(layer.apply).lower(variables, x).as_text()
  assert 'convolution' not in program(small) and 'dot_general' in program(small)
  assert 'convolution' in program(large)
  assert not conv_lib.smaller_than_kernel((2, 2, 2, 4), (3, 3, 4, 8), (2, 2))
  assert not conv_lib.smaller_than_kernel((2, 3, 3, 4), (3, 3, 4, 8), (1, 1))
  grouped = conv_lib.conv_general_dilated(small, jnp.ones((3, 3, 2, 8)), (1, 1), 'SAME',
                                      dimension_numbers=conv_lib.NHWC, feature_group_count=2)
  np.testing.assert_array_equal(grouped, jax.lax.conv_general_dilated(
      small, jnp.ones((3, 3, 2, 8)), (1, 1), 'SAME', dimension_numbers=conv_lib.NHWC,
      feature_group_count=2))
