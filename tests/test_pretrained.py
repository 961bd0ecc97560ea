"""Keras VGG16 and torchvision ResNet-18 weights: the source framework's outputs, clear errors."""

import collections
import sys

import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinyimagenet_jax import checkpoint, models, train
from tinyimagenet_jax.errors import DataError
from tinyimagenet_jax.models import pretrained

NEEDS_TORCH = ("PyTorch writes the .pth files; install torch (a CPU build: pip install torch"
               " --index-url https://download.pytorch.org/whl/cpu), as .ci/run does")


def build_shapes(name: str, image_size: int, num_classes: int, **options):
  """The registered model and its variables as shapes only (nothing computed)."""
  model = models.build_model(ml_collections.ConfigDict({'name': name, **options}), num_classes)
  images = jnp.zeros((1, image_size, image_size, 3))
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0), images))


def assert_close(ours, theirs) -> None:
  """Equal to float32 rounding, relative to the outputs' scale."""
  theirs = np.asarray(theirs)
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4,
                             atol=1e-4 * np.abs(theirs).max())


@pytest.fixture(scope='module')
def keras_vgg16():
  """Keras's VGG16 conv part at 32x32, random kernels and biases."""
  keras = pytest.importorskip('keras', reason='Keras (tensorflow-cpu, the test extra) is the'
                              ' reference VGG16')
  model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
  rng = np.random.default_rng(0)
  model.set_weights([0.1 * rng.standard_normal(w.shape).astype(np.float32) if w.ndim == 1
                     else w for w in model.get_weights()])
  return model


@pytest.mark.parametrize('file_name, save', [
    ('vgg16.weights.h5', lambda model, path: model.save_weights(path)),  # Keras 3 layout
    ('vgg16.h5', lambda model, path: model.save(path)),  # legacy HDF5 model file
])
def test_keras_vgg16_weights_give_keras_features(keras_vgg16, tmp_path, file_name, save):
  path = str(tmp_path / file_name)
  save(keras_vgg16, path)
  loaded = checkpoint.load_saved_variables(path)
  model, shapes = build_shapes('vgg16', 32, 10, hidden=())
  _, taken, total = checkpoint.merge_matching(shapes['params'], loaded['params'])
  assert (taken, total) == (26, 28)  # every conv; the new head stays fresh
  images = np.random.default_rng(1).standard_normal((2, 32, 32, 3), np.float32)
  ours = jax.jit(lambda v, x: model.apply(v, x, features=True))(loaded, images)
  assert_close(ours, np.asarray(keras_vgg16(images)).reshape(2, -1))


def write_keras2_weights(path, layers: dict[str, list[np.ndarray]]) -> None:
  """A weights file in the layout of Keras 2's save_weights and the official VGG16 files."""
  with h5py.File(path, 'w') as file:
    file.attrs['layer_names'] = np.array([name.encode() for name in layers])
    for name, arrays in layers.items():
      weight_names = [f'{name}_{kind}_1:0' for kind in 'Wb'[:len(arrays)]]
      file.create_group(name).attrs['weight_names'] = np.array([w.encode() for w in weight_names])
      for weight_name, array in zip(weight_names, arrays):
        file[name][weight_name] = array


def tiny_vgg16_layers() -> dict[str, list[np.ndarray]]:
  """Every VGG16 conv with a distinct 1x1x1x1 kernel and bias (the loader does not check shapes)."""
  return {name: [np.full((1, 1, 1, 1), i, np.float32), np.full((1,), -i, np.float32)]
          for i, name in enumerate(pretrained.KERAS_VGG16_CONVS)}


def test_keras2_layout_maps_kernel_then_bias(tmp_path):
  layers = {**tiny_vgg16_layers(), 'block5_pool': [], 'fc1': [np.ones((2, 3)), np.zeros(3)]}
  write_keras2_weights(tmp_path / 'notop.h5', layers)
  params = pretrained.load_keras_vgg16(str(tmp_path / 'notop.h5'))['params']
  assert sorted(params) == sorted([*pretrained.KERAS_VGG16_CONVS, 'fc1'])
  np.testing.assert_array_equal(params['block5_conv3']['kernel'], layers['block5_conv3'][0])
  np.testing.assert_array_equal(params['block5_conv3']['bias'], layers['block5_conv3'][1])
  assert params['fc1']['kernel'].shape == (2, 3)


@pytest.mark.parametrize('change, message', [
    (lambda layers: {**layers, 'block6_conv1': layers['block5_conv1']},
     'unknown weights block6_conv1.'),
    (lambda layers: {name: arrays for name, arrays in layers.items() if name < 'block4'},
     'missing weights block4_conv1, block4_conv2, block4_conv3, block5_conv1, block5_conv2'
     ' and 1 more.'),
])
def test_keras_file_with_other_layers_is_refused_by_name(tmp_path, change, message):
  path = str(tmp_path / 'other.h5')
  write_keras2_weights(path, change(tiny_vgg16_layers()))
  with pytest.raises(DataError) as error:
    pretrained.load_pretrained(path)
  assert str(error.value) == f'{path!r} is not Keras VGG16 weights: {message}'


def torchvision_resnet18(torch, num_classes: int = 1000):
  """torchvision's ResNet-18 with its module names (so its state_dict keys), built from torch.nn."""
  nn = torch.nn

  class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, c_in: int, c_out: int, stride: int):
      super().__init__()
      self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(c_out)
      self.relu = nn.ReLU()
      self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(c_out)
      self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x):
      shortcut = x if self.downsample is None else self.downsample(x)
      return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + shortcut)

  def stage(c_in: int, c_out: int, stride: int):
    return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))

  return nn.Sequential(collections.OrderedDict([
      ('conv1', nn.Conv2d(3, 64, 7, 2, 3, bias=False)), ('bn1', nn.BatchNorm2d(64)),
      ('relu', nn.ReLU()), ('maxpool', nn.MaxPool2d(3, 2, 1)),
      ('layer1', stage(64, 64, 1)), ('layer2', stage(64, 128, 2)),
      ('layer3', stage(128, 256, 2)), ('layer4', stage(256, 512, 2)),
      ('avgpool', nn.AdaptiveAvgPool2d(1)), ('flatten', nn.Flatten()),
      ('fc', nn.Linear(512, num_classes))]))


@pytest.fixture(scope='module')
def torch_resnet18(tmp_path_factory):
  """(model in eval mode with random BN affines and running statistics, its saved state_dict)."""
  torch = pytest.importorskip('torch', reason=NEEDS_TORCH)
  torch.manual_seed(0)
  model = torchvision_resnet18(torch)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  model.eval()
  path = tmp_path_factory.mktemp('torch') / 'resnet18.pth'
  torch.save(model.state_dict(), path)
  return model, str(path)


def test_torchvision_resnet18_gives_torch_logits(torch_resnet18):
  torch = pytest.importorskip('torch', reason=NEEDS_TORCH)
  reference, path = torch_resnet18
  variables = checkpoint.load_saved_variables(path)
  model, shapes = build_shapes('resnet18', 64, 1000, stem='imagenet')
  merged = {name: checkpoint.merge_matching(shapes[name], variables[name]) for name in shapes}
  assert all(taken == total for _, taken, total in merged.values())
  images = np.random.default_rng(1).standard_normal((2, 64, 64, 3), np.float32)
  ours = jax.jit(model.apply)({name: tree for name, (tree, _, _) in merged.items()}, images)
  with torch.no_grad():
    theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert_close(ours, theirs)


def test_the_small_stem_takes_all_but_the_stem_kernel_and_a_new_head(torch_resnet18):
  variables = checkpoint.load_saved_variables(torch_resnet18[1])
  _, shapes = build_shapes('resnet18', 64, 200)
  _, taken, total = checkpoint.merge_matching(shapes['params'], variables['params'])
  assert total - taken == 3  # stem_conv kernel 3x3 (not 7x7), head kernel and bias
  _, taken, total = checkpoint.merge_matching(shapes['batch_stats'], variables['batch_stats'])
  assert taken == total


def test_init_from_a_pth_file_starts_training_from_its_weights(digits_config, tmp_path,
                                                                 torch_resnet18):
  """resnet_cnn (stem, one block of 64, one of 128) takes the first block of layer1 and layer2."""
  digits_config.model = ml_collections.ConfigDict({'name': 'resnet_cnn'})
  digits_config.init_from = torch_resnet18[1]
  digits_config.num_epochs = 1
  digits_config.steps_per_epoch = 2
  digits_config.optimizer.learning_rate = 1e-12
  digits_config.optimizer.momentum = 0.0
  state, _ = train.train_and_evaluate(digits_config, str(tmp_path))
  saved = torch_resnet18[0].state_dict()['layer2.0.conv2.weight'].numpy()
  np.testing.assert_allclose(state.params['stage2_block1']['conv2']['kernel'],
                             saved.transpose(2, 3, 1, 0), rtol=1e-6)


def torchvision_state(torch) -> dict:
  """A stand-in state_dict with torchvision ResNet-18's keys (one-element tensors)."""
  return {key: torch.zeros(1) for key in pretrained.torchvision_resnet18_keys()}


@pytest.mark.parametrize('change, message', [
    (lambda state: {**state, 'module.fc.weight': state['fc.weight']},
     'unknown weights module.fc.weight.'),
    (lambda state: {key: value for key, value in state.items()
                    if key not in ('fc.bias', 'layer4.1.bn2.running_var')},
     'missing weights fc.bias, layer4.1.bn2.running_var.'),
])
def test_torch_file_with_other_keys_is_refused_by_name(tmp_path, change, message):
  torch = pytest.importorskip('torch', reason=NEEDS_TORCH)
  path = str(tmp_path / 'other.pth')
  torch.save(change(torchvision_state(torch)), path)
  with pytest.raises(DataError) as error:
    pretrained.load_pretrained(path)
  assert str(error.value) == f'{path!r} is not a torchvision ResNet-18 state_dict: {message}'


def test_a_pickled_module_is_not_a_state_dict(tmp_path):
  torch = pytest.importorskip('torch', reason=NEEDS_TORCH)
  path = str(tmp_path / 'model.pt')
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(DataError, match=r"is not a state_dict; save one with "
                                      r"torch\.save\(model\.state_dict\(\), path\)\.$"):
    pretrained.load_pretrained(path)


def test_reading_a_pth_file_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
  path = tmp_path / 'resnet18.pth'
  path.write_bytes(b'')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  with pytest.raises(DataError) as error:
    checkpoint.load_saved_variables(str(path))
  assert str(error.value) == (
      f'reading {str(path)!r} needs PyTorch; install it with `pip install torch`'
      ' (or a CPU wheel from https://download.pytorch.org/whl/cpu).')


@pytest.mark.parametrize('name, message', [
    ('absent.h5', "pretrained weights file '{path}' does not exist."),
    ('weights.ckpt', "'{path}' is not a pretrained weights file; give one ending in .h5, .pt,"
                     ' .pth.'),
])
def test_other_paths_are_refused(tmp_path, name, message):
  path = str(tmp_path / name)
  with pytest.raises(DataError) as error:
    pretrained.load_pretrained(path)
  assert str(error.value) == message.format(path=path)
