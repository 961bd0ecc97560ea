"""Fifth report: M1-M4 on Tiny ImageNet, M4's classes and filters, ensembles of M3.

    python launch.py --config=configs/tiny_ensembles.py
    python launch.py --config=configs/tiny_ensembles.py --config.mode=evaluate
    python launch.py --config=configs/tiny_ensembles.py:smoke   # seconds, offline

All 200 classes, measured on the official validation split (the test split is
unlabelled: predictions for it go to the course server's format). The report's
training: mean subtraction and normalisation, horizontal mirroring, SGD with
Nesterov momentum 0.9, lr 0.01 multiplied by 0.85 every 10 epochs, L2 1e-3 on
the weights, dropout 0.5 after FC-256, 150 epochs (M4; the report gives none for
M1-M3: 150 too); batch size not given: 128. The M3 variants: the report used "a
different set of hyperparameters" for each of 6 M3 models trained 75 epochs;
here 6 members differing in seed and learning rate (0.005, 0.01, 0.02, two seeds
each), one vmapped run on a GPU.

Expected (the report, test-server accuracy): M1 23.8 %, M2 28.6 %, M3 34.2 %,
M4 39.3 %; M4's best class "school bus" 86 %, worst "wooden spoon" 2 %; smooth
first-layer filters; the 6-member M3 ensemble 39.8 % on validation, accuracy
rising with ensemble size. Writes into runs/tiny_ensembles what
tinyimagenet_jax/experiments/tiny_ensembles.py lists.

Offline here, the prepared dataset: --config.data.data_dir=/tmp/tfds_data
--config.data.download=False. Time here (2 CPU cores): the smoke about 6-7 s, 14-18 s
on an empty compilation cache (the machine's speed varies by up to 1.5x); M4
trains at 25 images per second, over an hour per epoch of all 100,000 images, so the
full runs want a GPU (with --config.data.num_workers set to feed it). See WORKSPACE.md.
"""

import ml_collections

from configs.tiny_models import TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.experiments import common


def get_config(mode: str = 'full'):
  config = base_config()
  config.experiment = 'tiny_ensembles'
  config.data.name = 'tiny_imagenet'
  config.data.eval_split = 'validation'
  config.data.mean, config.data.std = TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
  config.augment.flip_prob = 0.5
  config.model.name = 'tiny_m4'  # each run sets its own model
  config.model.dropout = 0.5
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.schedule = 'step'
  config.optimizer.decay_rate = 0.85
  config.optimizer.decay_every_epochs = 10.0
  config.optimizer.l2 = 1e-3
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 150

  config.ensembles = ml_collections.ConfigDict()
  config.ensembles.models = ('tiny_m1', 'tiny_m2', 'tiny_m3', 'tiny_m4')
  config.ensembles.member_model = 'tiny_m3'
  config.ensembles.member_epochs = 75
  # One member per (seed, learning rate) pair.
  config.ensembles.seeds = (0, 1, 2, 3, 4, 5)
  config.ensembles.learning_rates = (0.005, 0.005, 0.01, 0.01, 0.02, 0.02)
  config.ensembles.predict_split = 'test'  # the best model's predictions file
  if mode == 'smoke':
    common.smoke(config, steps=2, epochs=2)
    config.model.hidden = (16,)
    config.model.dropout = 0.0  # its random masks take most of a CPU compile
    config.ensembles.member_epochs = 2
    config.ensembles.seeds = (0, 1, 2)
    config.ensembles.learning_rates = (0.01, 0.01, 0.02)
  return config
