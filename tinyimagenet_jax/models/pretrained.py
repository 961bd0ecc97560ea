"""Pretrained weights from other frameworks, renamed and laid out as our Flax models'.

Each loader returns {'params': ..., 'batch_stats': ...} of numpy arrays, the
form `checkpoint.load_saved_variables` returns for an Orbax run, so
`--config.init_from=<file>` takes every array whose name and shape match (a
head with another class count stays freshly initialised):

    .h5         Keras VGG16 weights                -> vgg16
    .pt, .pth   torchvision ResNet-18 state_dict   -> resnet18 (all of it with stem='imagenet')
"""

import pathlib
import pickle
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from tinyimagenet_jax.errors import DataError
from tinyimagenet_jax.models.vgg import VGG16_BLOCKS

if TYPE_CHECKING:
  import h5py

# Keras VGG16's layers with weights: the 13 convs always, its classifier if saved with the top.
KERAS_VGG16_CONVS = tuple(f'block{block}_conv{conv}'
                          for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1)
                          for conv in range(1, convs + 1))
KERAS_VGG16_TOP = ('fc1', 'fc2', 'predictions')

# torchvision ResNet-18: blocks per stage, and module names -> ours (stem and head, in a block).
RESNET18_STAGES = (2, 2, 2, 2)
TORCH_OUTER_NAMES = {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'fc': 'head'}
TORCH_BLOCK_NAMES = {'conv1': 'conv1', 'bn1': 'bn1', 'conv2': 'conv2', 'bn2': 'bn2',
                     'downsample.0': 'proj_conv', 'downsample.1': 'proj_bn'}
TORCH_BN_LEAVES = {'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
TORCH_BLOCK_KEY = re.compile(r'layer(\d+)\.(\d+)\.(.+)')


def _offending(kind: str, names: Iterable[str], path: str, expected: str) -> DataError:
  """A one-line error naming the first few unknown or missing weights in a file."""
  names = sorted(names)
  shown = ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
  return DataError(f'{path!r} is not {expected}: {kind} weights {shown}.')


def _check_names(found: Iterable[str], required: Iterable[str], allowed: Iterable[str],
                 path: str, expected: str) -> None:
  """Raises a DataError if `found` has a name outside `allowed` or lacks one of `required`."""
  found = set(found)
  unknown = found - set(allowed)
  if unknown:
    raise _offending('unknown', unknown, path, expected)
  missing = set(required) - found
  if missing:
    raise _offending('missing', missing, path, expected)


def _existing(path: str) -> pathlib.Path:
  """`path` as a Path, or a DataError if no file is there."""
  file = pathlib.Path(path).expanduser()
  if not file.is_file():
    raise DataError(f'pretrained weights file {path!r} does not exist.')
  return file


def _decode(name: bytes | str) -> str:
  """An HDF5 string attribute as str (Keras 2 wrote bytes, Keras 3 str)."""
  return name.decode() if isinstance(name, bytes) else name


def _legacy_keras_layers(group: 'h5py.Group') -> dict[str, list[np.ndarray]]:
  """Layer name -> weight arrays in saved order, from Keras 2's (and the official files') layout.

  The group lists its layers in attribute `layer_names` and each layer its
  weights in `weight_names` (kernel before bias); layers without weights are
  skipped.
  """
  layers = {}
  for layer in map(_decode, group.attrs['layer_names']):
    names = [_decode(name) for name in group[layer].attrs['weight_names']]
    if names:
      layers[layer] = [np.asarray(group[layer][name]) for name in names]
  return layers


def _keras3_layers(group: 'h5py.Group') -> dict[str, list[np.ndarray]]:
  """Layer name -> weight arrays in saved order, from Keras 3's `.weights.h5` layout.

  Each layer is `layers/<object name>/vars/<index>`, its Keras name in the
  `vars` group's `name` attribute (object names such as conv2d_10 sort out of
  order, so weights are read by index).
  """
  layers = {}
  for key, layer in group.items():
    variables = layer['vars']
    if len(variables):
      name = _decode(variables.attrs.get('name', key))
      layers[name] = [np.asarray(variables[str(index)]) for index in range(len(variables))]
  return layers


def read_keras_layers(path: str) -> dict[str, list[np.ndarray]]:
  """Layer name -> weight arrays of a Keras `.h5` weights or model file, without TensorFlow
  (h5py is imported here, by the runs that read one: 20 ms off every start-up)."""
  import h5py  # pylint: disable=import-outside-toplevel,redefined-outer-name
  file = _existing(path)
  try:
    with h5py.File(file, 'r') as saved:
      if 'layers' in saved:
        return _keras3_layers(saved['layers'])
      group = saved['model_weights'] if 'model_weights' in saved else saved
      if 'layer_names' not in group.attrs:
        raise DataError(f'{path!r} holds no Keras weights (no layer_names and no layers group).')
      return _legacy_keras_layers(group)
  except OSError as error:
    raise DataError(f'{path!r} is not a readable HDF5 file: {error}.') from error


def load_keras_vgg16(path: str) -> dict:
  """Keras VGG16 weights (`.h5`: save_weights, the official notop/top files) as vgg16 variables.

  Our vgg16 uses Keras's layer names; Conv2D kernels are HWIO and Dense
  kernels (in, out) in both, and both flatten the last maps (7x7x512 at
  224x224) in HWC order, so the arrays map unchanged. fc1 fits our vgg16
  only at the input size Keras saved it for (25,088 inputs at 224x224).
  """
  layers = read_keras_layers(path)
  _check_names(layers, KERAS_VGG16_CONVS, KERAS_VGG16_CONVS + KERAS_VGG16_TOP, path,
               'Keras VGG16 weights')
  params = {name: dict(zip(('kernel', 'bias'), arrays)) for name, arrays in layers.items()}
  return {'params': params, 'batch_stats': {}}


def torchvision_resnet18_keys() -> set[str]:
  """The state_dict keys of torchvision's resnet18, num_batches_tracked left out."""
  modules = {'conv1': 'conv', 'bn1': 'bn', 'fc': 'fc'}
  for stage, blocks in enumerate(RESNET18_STAGES, start=1):
    for block in range(blocks):
      prefix = f'layer{stage}.{block}.'
      modules.update({prefix + 'conv1': 'conv', prefix + 'bn1': 'bn',
                      prefix + 'conv2': 'conv', prefix + 'bn2': 'bn'})
      if stage > 1 and block == 0:
        modules.update({prefix + 'downsample.0': 'conv', prefix + 'downsample.1': 'bn'})
  leaves = {'conv': ('weight',), 'bn': ('weight', 'bias', 'running_mean', 'running_var'),
            'fc': ('weight', 'bias')}
  return {f'{module}.{leaf}' for module, kind in modules.items() for leaf in leaves[kind]}


def _flax_module(torch_module: str) -> tuple[str, ...]:
  """Our module path for a torchvision ResNet module name (conv1, layer2.0.downsample.1, fc)."""
  block = TORCH_BLOCK_KEY.fullmatch(torch_module)
  if block:
    stage, index, inner = block.groups()
    return f'stage{stage}_block{int(index) + 1}', TORCH_BLOCK_NAMES[inner]
  return (TORCH_OUTER_NAMES[torch_module],)


def _flax_leaf(leaf: str, array: np.ndarray) -> tuple[str, str, np.ndarray]:
  """(collection, our name, array in Flax layout) for one torch tensor of a conv, BN or linear.

  Conv weights OIHW -> HWIO, linear (out, in) -> (in, out), BN weight ->
  scale, running statistics -> batch_stats.
  """
  if leaf in TORCH_BN_LEAVES:
    return (*TORCH_BN_LEAVES[leaf], array)
  if leaf == 'bias':
    return 'params', 'bias', array
  if array.ndim == 4:
    return 'params', 'kernel', array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return 'params', 'kernel', array.T
  return 'params', 'scale', array


def _insert(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  """Puts `value` at `path` in a nested dict, creating the dicts on the way."""
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `torch.save(model.state_dict(), path)` file as name -> float32 numpy array."""
  file = _existing(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise DataError(f'reading {path!r} needs PyTorch; install it with `pip install torch`'
                    ' (or a CPU wheel from https://download.pytorch.org/whl/cpu).') from error
  try:
    state = torch.load(file, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as error:
    raise DataError(f'{path!r} is not a state_dict; save one with'
                    ' torch.save(model.state_dict(), path).') from error
  if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
    raise DataError(f'{path!r} is not a state_dict (a dict of tensors); save one with'
                    ' torch.save(model.state_dict(), path).')
  return {name: tensor.detach().float().numpy() for name, tensor in state.items()}


def load_torch_resnet18(path: str) -> dict:
  """A torchvision ResNet-18 state_dict (`.pt`/`.pth`) as resnet18 variables.

  Names map conv1/bn1 -> stem_conv/stem_bn, layer<s>.<b> -> stage<s>_block<b+1>
  (conv1, bn1, conv2, bn2; downsample.0/.1 -> proj_conv/proj_bn), fc -> head;
  num_batches_tracked is dropped. The blocks are the same as torchvision's
  (stride on the first 3x3 conv, BN epsilon 1e-5); our default stem is not:
  a 3x3 stride-1 conv without max pool, so the 7x7 stem kernel does not fit
  it and stays freshly initialised. With `--config.model.stem=imagenet`
  (torchvision's 7x7 stride-2 conv and 3x3 max pool) every array fits and
  the model computes torchvision's logits on NHWC images.
  """
  state = read_torch_state_dict(path)
  expected = torchvision_resnet18_keys()
  tracked = {key.replace('running_mean', 'num_batches_tracked') for key in expected
             if key.endswith('running_mean')}
  _check_names(state, expected, expected | tracked, path, 'a torchvision ResNet-18 state_dict')
  variables = {'params': {}, 'batch_stats': {}}
  for key in expected:
    module, leaf = key.rsplit('.', 1)
    collection, name, array = _flax_leaf(leaf, state[key])
    _insert(variables[collection], (*_flax_module(module), name), np.ascontiguousarray(array))
  return variables


LOADERS: dict[str, Callable[[str], dict]] = {
    '.h5': load_keras_vgg16,
    '.pt': load_torch_resnet18,
    '.pth': load_torch_resnet18,
}


def is_pretrained_file(path: str) -> bool:
  """Whether `path` names a weights file of another framework (by suffix), not an Orbax run."""
  return pathlib.Path(path).suffix.lower() in LOADERS


def load_pretrained(path: str) -> dict:
  """The variables in a Keras VGG16 `.h5` or torchvision ResNet-18 `.pt`/`.pth` file."""
  suffix = pathlib.Path(path).suffix.lower()
  if suffix not in LOADERS:
    raise DataError(f'{path!r} is not a pretrained weights file; give one ending in'
                    f' {", ".join(sorted(LOADERS))}.')
  return LOADERS[suffix](path)
