"""First report (Krizhevsky 2012, Fig. 1): ReLU vs tanh, a learning-rate sweep each.

    python launch.py --config=configs/relu_vs_tanh.py
    python launch.py --config=configs/relu_vs_tanh.py:smoke   # seconds, offline

conv4 on CIFAR-10, SGD batch 128, no regularisation; for each activation every
candidate learning rate trains until <= 25% training error (cap 30 epochs);
the fewest epochs wins. The report: ReLU lr 0.2 in 6 epochs, tanh lr 0.05 in
8. Measured here: the same, but tanh lr 0.1 also gets there in 6 (ratio 1.00). Writes runs.csv/.md, training_error.png, seconds_per_epoch.png,
summary.json/.md into runs/relu_vs_tanh. Offline, use the CIFAR-10 JPEGs:
--config.data.name=image_folder --config.data.root=/tmp/cifar-10-images-jpg.
Time here (2 CPU cores): about 2.7 minutes per epoch, 40 epochs for the
sweep; results in WORKSPACE.md.
"""

import ml_collections

from configs import conv4_relu
from tinyimagenet_jax.experiments import common


def get_config(mode: str = 'full'):
  config = conv4_relu.get_config()
  config.experiment = 'relu_vs_tanh'
  config.sweep = ml_collections.ConfigDict()
  # Candidates, most promising first so pruning caps the others early.
  config.sweep.relu = (0.2, 0.1, 0.05)
  config.sweep.tanh = (0.05, 0.1, 0.02)
  config.sweep.prune = True  # cap later candidates at the best epochs so far
  if mode == 'smoke':
    common.smoke(config, steps=10, epochs=3)
    config.model.filters = (8, 16, 16, 16)
    config.model.hidden = 32
    config.sweep.relu = (0.2, 0.05)
    config.sweep.tanh = (0.1, 0.05)
    config.target_train_error = 0.8
  return config
