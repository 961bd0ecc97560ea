"""Model registry: a name -> Flax module class, plus building one from a config.

Every model maps float32 NHWC images to logits, takes `train` (dropout, batch
norm), and returns the penultimate features instead with `features=True`.
Adding a model is one class in its family file and one line here.
"""

import dataclasses

import flax.linen as nn
import ml_collections

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import alexnet, convnets, lenet, mlp, resnet, vgg

MODELS: dict[str, type[nn.Module]] = {
    'alexnet': alexnet.AlexNet,
    'cnn2': convnets.CNN2,
    'cnn_multi': convnets.CNNMulti,
    'conv3_bn': convnets.Conv3BN,
    'conv4': convnets.Conv4,
    'lenet5': lenet.LeNet5,
    'linear': mlp.Linear,
    'mlp': mlp.MLP,
    'resnet18': resnet.ResNet,
    'resnet_cnn': resnet.ResNetCNN,
    'tiny_m1': convnets.TinyM1,
    'tiny_m2': convnets.TinyM2,
    'tiny_m3': convnets.TinyM3,
    'tiny_m4': convnets.TinyM4,
    'vgg16': vgg.VGG16,
}


def validate_model(model: ml_collections.ConfigDict) -> None:
  """ConfigError unless `model.name` names a registered model."""
  config_lib.one_of('model.name', model.name, MODELS)


def build_model(model: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The module named by `model.name`, its other fields as constructor options."""
  validate_model(model)
  cls = MODELS[model.name]
  options = {key: value for key, value in model.items() if key != 'name'}
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name', 'num_classes'}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(
        f'config.model.{unknown[0]} is not an option of {model.name!r}; its'
        ' options are: ' + ', '.join(sorted(fields)))
  return cls(num_classes=num_classes, **options)
