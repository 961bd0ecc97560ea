"""Quickstart: conv4 (ReLU) on scikit-learn's bundled 8x8 digits, fully offline.

    python launch.py --config=configs/quickstart.py --workdir=runs/quickstart

Expected: test top-1 >= 0.95. Measured here (2 CPU cores): 0.9972 after 15 epochs, with
batches made on the device (the default) and on the host path (another data order);
epochs of 0.17-0.33 s each; once its programs are compiled 5.0-6.0 s wall on the device
path and 6.0-7.4 s on the host path, with nothing compiled yet 7.8-8.3 and 8.4-9.5 s,
start-up, evaluation and figures included (the machine's speed drifts).
"""

from tinyimagenet_jax.config import base_config


def get_config():
  config = base_config()
  config.data.name = 'digits'
  config.model.name = 'conv4'
  config.model.activation = 'relu'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 15
  return config
