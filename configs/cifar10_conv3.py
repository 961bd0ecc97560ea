"""Second report: the 3-conv CNN on CIFAR-10 with batch norm, dropout, early stopping,
four optimizers and t-SNE of its latent space.

    python launch.py --config=configs/cifar10_conv3.py
    python launch.py --config=configs/cifar10_conv3.py --config.mode=evaluate
    python launch.py --config=configs/cifar10_conv3.py:smoke   # seconds, offline

conv3_bn (conv 3x3 32-64-128, each BN + ReLU + pool, FC 512 + dropout 0.5),
45,000/5,000 train/validation split, shift 0.1 (edge-filled) and horizontal
flip, pixels / 255, Adam lr 0.01, batch 32, 30 epochs, the report's early
stopping (val loss rose 3 epochs in a row while the train loss fell;
--config.early_stopping.rule=patience for 5 epochs without a better val loss,
or '' for off; each rule's runs get their own folders). The report states one
learning rate, 0.01 (Adam); its script has one learning_rate variable, so GD
(momentum 0), AdaDelta (rho 0.95, eps 1e-8, TensorFlow's factor) and
ProximalAdaGrad (l1 = l2 = 0, initial accumulator 0.1) take 0.01 too (not stated).
Expected (the report, 30 epochs, early stopping never fired): train / val
accuracy with BN and dropout 70.94 / 70.87 %, BN only 78.97 / 77.92 %, no BN
about 10 % (chance) with or without dropout; test 70.87 %. Optimizers, train /
val accuracy: GD 85.97 / 70.87 %, AdaDelta 55.61 / 54.36 %, ProximalAdaGrad
85.07 / 80.66 % (GD's 70.87 repeats the Adam number: likely a copy slip). The
t-SNE of flatten and FC-1 features separates classes from epoch 14 on.
Writes into runs/cifar10_conv3 what tinyimagenet_jax/experiments/cifar10_conv3.py lists.

Offline, use the CIFAR-10 JPEGs (tar xzf ../shared/data/cifar-10-images-jpg.tgz -C /tmp/data):
--config.data.name=image_folder --config.data.root=/tmp/data/cifar-10-images-jpg.
Time here (2 CPU cores shared with another run, JPEGs): 0.22 s per step of 32
(146 img/s) and ~35 s per epoch for the 15,000 validation and test images, so
~6 min per epoch and ~20 h for all 7 runs x 30 epochs: use a GPU, or reduce with
--config.num_epochs=4 --config.steps_per_epoch=350 '--config.snapshot_epochs=(1,2,4)'
(about an hour here).
"""

import ml_collections

from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.experiments import common


def get_config(mode: str = 'full'):
  """The report's setup; 'smoke': digits, tiny filters, 3 steps x 3 epochs."""
  config = base_config()
  config.experiment = 'cifar10_conv3'
  config.data.name = 'cifar10'
  config.data.validation_size = 5000
  config.augment.translate = 0.1
  config.augment.flip_prob = 0.5
  config.model.name = 'conv3_bn'
  config.model.batch_norm = True
  config.model.dropout = 0.5  # the rate of the runs with dropout
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 0.01
  config.batch_size = 32
  config.eval_batch_size = 500
  config.num_epochs = 30
  config.early_stopping.rule = 'rising'
  config.snapshot_epochs = (4, 14, 28)  # the main run's, for t-SNE
  config.conv3 = ml_collections.ConfigDict()
  # Compared with the main run's Adam: optimizer name -> learning rate.
  config.conv3.optimizers = ml_collections.ConfigDict(
      {'sgd': 0.01, 'adadelta': 0.01, 'proximal_adagrad': 0.01})
  config.conv3.tsne_points = 1000  # test images in each t-SNE figure
  config.conv3.tsne_steps = 1000
  config.conv3.tsne_perplexity = 30.0
  if mode == 'smoke':
    common.smoke(config, steps=3, epochs=3)
    config.data.validation_size = 200
    config.model.stages = (((3, 8),), ((3, 8),), ((3, 16),))
    config.model.hidden = (16,)
    config.snapshot_epochs = (1, 3)
    config.conv3.tsne_points = 100
    config.conv3.tsne_steps = 150
  return config
