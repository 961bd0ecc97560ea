"""The suite's seconds-long run as a config file: a small conv4 on the offline digits.

Tests build it in-process (`make_digits_config`, through conftest's `digits_config`
fixture) and hand it to launch.py as `--config=tests/digits_config.py`.
"""

from tinyimagenet_jax.config import base_config


def make_digits_config():
  """A seconds-long run: a small conv4 on the offline digits, no progress bar."""
  config = base_config()
  config.data.name = 'digits'
  config.model.name = 'conv4'
  config.model.filters = (8, 16, 16, 16)
  config.model.hidden = 32
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.batch_size = 64
  config.eval_batch_size = 96  # 360 test digits: 3 full batches and a padded one
  config.num_epochs = 2
  config.progress_bar = False
  return config


def get_config():
  """launch.py's entry: make_digits_config()."""
  return make_digits_config()
