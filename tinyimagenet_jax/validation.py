"""validate(config, num_devices): every config check, in one fixed order, before anything compiles.

Each check lives where its knowledge does: the run-level fields in `config`,
each registry's section in its own module. This module only fixes the order,
so the first mistake in a config is always the one reported.
"""

import ml_collections

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import members
from tinyimagenet_jax import models
from tinyimagenet_jax import optim
from tinyimagenet_jax.data import resident
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError (one line) for the first value that cannot work."""
  sources.validate_source(config.data)
  models.validate_model(config.model)
  optim.validate_optimizer(config.optimizer)
  config_lib.validate_training(config, num_devices)
  optim.validate_regularisation(config.optimizer)
  config_lib.validate_checkpoints(config)
  sources.validate_data(config.data)
  resident.validate_placement(config.data)
  transforms.validate_preprocess(config)
  config_lib.validate_stopping(config)
  members.validate_members(config)
  config_lib.validate_mode(config)
