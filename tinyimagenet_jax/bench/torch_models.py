"""The benchmarked Flax models written in torch.nn, layer for layer, for the train-step race.

Each module computes the same function as its Flax twin (same widths, padding,
pooling, batch-norm placement and momentum; flattening in HWC order), so
`load_flax_variables` makes their logits equal and their parameter counts
match exactly. Torch modules are named as the Flax ones where Flax names them;
`FLAX_NAMES` maps the rest.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def flatten_hwc(x: torch.Tensor) -> torch.Tensor:
  """NCHW maps flattened in HWC order, as Flax flattens NHWC (a view under channels_last)."""
  return x.permute(0, 2, 3, 1).flatten(1)


def batch_norm(channels: int) -> nn.BatchNorm2d:
  """Batch norm as `layers.batch_norm`: Flax momentum 0.9 is torch's 0.1, epsilon 1e-5."""
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class Conv4(nn.Module):
  """`convnets.Conv4` with ReLU: 3x3 SAME convs 64-128-256-256, 2x2 max pool after three, FC."""

  FLAX_NAMES = {'convs.0': 'Conv_0', 'convs.1': 'Conv_1', 'convs.2': 'Conv_2',
                'convs.3': 'Conv_3', 'hidden': 'Dense_0', 'output': 'Dense_1'}

  def __init__(self, num_classes: int, image_size: int,
               filters: Sequence[int] = (64, 128, 256, 256), pooled_convs: int = 3,
               hidden: int = 256):
    super().__init__()
    widths = [3, *filters]
    self.pooled_convs = pooled_convs
    self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1)
                               for i in range(len(filters)))
    side = image_size // 2**pooled_convs
    self.hidden = nn.Linear(side * side * filters[-1], hidden)
    self.output = nn.Linear(hidden, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for index, conv in enumerate(self.convs):
      x = torch.relu(conv(x))
      if index < self.pooled_convs:
        x = nn.functional.max_pool2d(x, 2)
    return self.output(torch.relu(self.hidden(flatten_hwc(x))))


class LeNet5(nn.Module):
  """`lenet.LeNet5` as registered: tanh, 2x2 average pools, VALID 5x5 convs C1 6 and C3 16."""

  FLAX_NAMES = {}

  def __init__(self, num_classes: int, image_size: int):
    super().__init__()
    self.C1 = nn.Conv2d(3, 6, 5)
    self.C3 = nn.Conv2d(6, 16, 5)
    side = ((image_size - 4) // 2 - 4) // 2
    self.C5 = nn.Linear(side * side * 16, 120)
    self.F6 = nn.Linear(120, 84)
    self.output = nn.Linear(84, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = nn.functional.avg_pool2d(torch.tanh(self.C1(x)), 2)
    x = nn.functional.avg_pool2d(torch.tanh(self.C3(x)), 2)
    x = torch.tanh(self.C5(flatten_hwc(x)))
    return self.output(torch.tanh(self.F6(x)))


class BasicBlock(nn.Module):
  """`resnet.BasicBlock`: conv-BN-ReLU, conv-BN, plus identity or 1x1 projection, ReLU."""

  def __init__(self, in_width: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_width, width, 3, stride, padding=1, bias=False)
    self.bn1 = batch_norm(width)
    self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
    self.bn2 = batch_norm(width)
    self.projects = stride != 1 or in_width != width
    if self.projects:
      self.proj_conv = nn.Conv2d(in_width, width, 1, stride, bias=False)
      self.proj_bn = batch_norm(width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.projects:
      x = self.proj_bn(self.proj_conv(x))
    return torch.relu(x + y)


class ResNet(nn.Module):
  """`resnet.ResNet` with its 'small' stem: 3x3 conv-BN-ReLU, basic-block stages, mean, FC."""

  FLAX_NAMES = {}

  def __init__(self, num_classes: int, image_size: int,
               stage_sizes: Sequence[int] = (2, 2, 2, 2),
               widths: Sequence[int] = (64, 128, 256, 512)):
    del image_size  # global average pooling: any size
    super().__init__()
    self.stem_conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
    self.stem_bn = batch_norm(widths[0])
    in_width, self.block_names = widths[0], []
    for stage, (blocks, width) in enumerate(zip(stage_sizes, widths)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        self.block_names.append(f'stage{stage + 1}_block{block + 1}')
        self.add_module(self.block_names[-1], BasicBlock(in_width, width, stride))
        in_width = width
    self.head = nn.Linear(in_width, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = torch.relu(self.stem_bn(self.stem_conv(x)))
    for name in self.block_names:
      x = self.get_submodule(name)(x)
    return self.head(x.mean(dim=(2, 3)))


MODELS: dict[str, type[nn.Module]] = {'conv4': Conv4, 'lenet5': LeNet5, 'resnet18': ResNet}


def parameter_count(model: nn.Module) -> int:
  """Trainable parameters (batch-norm running statistics are buffers, not counted)."""
  return sum(p.numel() for p in model.parameters())


def _torch_layout(kind: type[nn.Module], leaf: str, value: np.ndarray) -> np.ndarray:
  """A Flax array in torch's layout: conv kernels HWIO -> OIHW, dense (in, out) -> (out, in)."""
  if leaf != 'kernel':
    return value
  return value.transpose(3, 2, 0, 1) if kind is nn.Conv2d else value.T


# Flax leaf name -> torch tensor name, for each layer type with weights.
TORCH_LEAVES = {
    nn.Conv2d: {'kernel': 'weight', 'bias': 'bias'},
    nn.Linear: {'kernel': 'weight', 'bias': 'bias'},
    nn.BatchNorm2d: {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                     'var': 'running_var'},
}


def _flax_layer(variables: dict, path: str) -> dict:
  """The Flax params and batch stats of the layer at dotted `path`, merged in one dict."""
  merged = {}
  for collection in ('params', 'batch_stats'):
    node = variables.get(collection, {})
    for key in path.split('.'):
      node = node.get(key, {})
    merged.update(node)
  return merged


def load_flax_variables(model: nn.Module, variables: dict) -> None:
  """Copies Flax variables ({'params', 'batch_stats'}) into the torch twin `model`, in place."""
  names = getattr(model, 'FLAX_NAMES', {})
  with torch.no_grad():
    for name, module in model.named_modules():
      if type(module) not in TORCH_LEAVES:
        continue
      layer = _flax_layer(variables, names.get(name, name))
      for leaf, target in TORCH_LEAVES[type(module)].items():
        tensor = getattr(module, target)
        if tensor is not None:  # convs without bias
          value = _torch_layout(type(module), leaf, np.asarray(layer[leaf], np.float32))
          tensor.copy_(torch.tensor(value))
