"""Model registry: a name -> Flax module class, plus building one from a config.

Every model maps float32 NHWC images to logits, takes `train` (dropout, batch
norm), and returns the penultimate features instead with `features=True`.
Adding a model is one class in its family file and one line here.
"""

import dataclasses

import flax.linen as nn
import ml_collections

from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import convnets, lenet, mlp

MODELS: dict[str, type[nn.Module]] = {
    'conv4': convnets.Conv4,
    'lenet5': lenet.LeNet5,
    'mlp': mlp.MLP,
}


def build_model(model: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The module named by `model.name`, its other fields as constructor options."""
  cls = MODELS[model.name]
  options = {key: value for key, value in model.items() if key != 'name'}
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name', 'num_classes'}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(
        f'config.model.{unknown[0]} is not an option of {model.name!r}; its'
        ' options are: ' + ', '.join(sorted(fields)))
  return cls(num_classes=num_classes, **options)
