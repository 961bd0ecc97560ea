"""Fourth report: 2-layer perceptron vs LeNet-5 on CIFAR-100, then LeNet-5 on 5 STL-10 classes.

    python launch.py --config=configs/cifar100_lenet.py
    python launch.py --config=configs/cifar100_lenet.py --config.mode=evaluate
    python launch.py --config=configs/cifar100_lenet.py:smoke   # seconds, offline

Baseline: the 2LP (1024 ReLU units) and LeNet-5 (tanh, average pooling), SGD lr
1e-4, batch 64, 100 epochs, pixels / 255, 15 seeds each. Experiments 1 and 2:
OneCycle (SGD, momentum cycled 0.95 -> 0.85 -> 0.95), gradient clipping at 1,
weight decay 1e-3 and the report's transforms (RandomHorizontalFlip(0.1),
RandomRotation(20), RandomAdjustSharpness(2, p=0.1), ColorJitter(0.1, 0.1, 0.1),
Normalize(train mean, std); here flip 0.1, rotation 20 degrees, jitter, then
sharpness: AUGMENTATIONS runs photometric ops in that order); the 2LP's cycle
starts at 4e-6 and peaks at 1e-4, LeNet's at 2e-4 and 0.01 (the report's). The
report gives no epochs, batch size or widths for them: 100 epochs, batch 64,
3LP = (1024, 512) + dropout 0.5, LeNet + FC = a Dense(84) F7 after F6 with batch
norm after S4. The transfer: the best LeNet of experiments 1 and 2 on STL-10's
car, deer, horse, monkey, truck (500 train, 800 test images each) resized from
96x96 to 32x32, with every matching parameter loaded and a new 5-way head, 30
epochs of the same OneCycle (the report gives no setting); plus the same run from
scratch. STL-10 comes from TFDS ('stl10', about 2.6 GB to download once).

Expected (the report): baseline test / train accuracy, train loss, averaged over
15 runs: 2LP 0.1493 / 0.2340, 3.2051; LeNet-5 0.0259 / 0.0259, 4.442. Experiment
1: 2LP 21.51 %, LeNet-5 29.7 % test accuracy; experiment 2: 3LP + dropout 26.82 %,
LeNet + FC + BN about 27 %. The transfer's accuracy is only in the report's WandB
link. Writes into runs/cifar100_lenet what
tinyimagenet_jax/experiments/cifar100_lenet.py lists.

CIFAR-100 comes from TFDS ('cifar100'). The original python version works too:
--config.data.name=cifar100_python --config.data.root=<folder holding
cifar-100-python/>. Offline here, only 1,117 training and 20 test images of it
exist (../shared/data/cifar100-partial-exact.tgz), and no STL-10; a reduced run
carves a validation split from those images and transfers to CIFAR-10's car,
deer, horse and truck JPEGs (STL-10's classes but monkey) instead:

    tar xzf ../shared/data/cifar100-partial-exact.tgz -C /tmp/c100
    python launch.py --config=configs/cifar100_lenet.py --workdir=runs/cifar100_lenet_reduced \
        --config.data.name=cifar100_python --config.data.root=/tmp/c100/cifar100-partial-exact \
        --config.data.validation_size=0.2 --config.study.seeds=5 --config.num_epochs=30 \
        --config.transfer.data.name=image_folder \
        --config.transfer.data.root=/tmp/data/cifar-10-images-jpg \
        "--config.transfer.data.classes=('automobile','deer','horse','truck')" \
        --config.transfer.num_epochs=5

Time here (2 CPU cores): the smoke 7-10 s, 15-21 s on an empty compilation cache (the
machine's speed varies by up to 1.5x from day to day). With other training on the cores (load about 8): on the CIFAR-100 pieces about
12 s per run plus 1.5 s per epoch; the CIFAR-10 stand-in transfer 43 s per epoch: the
reduced run about 25 minutes.
The full study was not run here (no download).
"""

import ml_collections

from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.experiments import common

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)  # per channel over the 50,000 training images
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
STL5 = ('car', 'deer', 'horse', 'monkey', 'truck')


def get_config(mode: str = 'full'):
  config = base_config()
  config.experiment = 'cifar100_lenet'
  config.data.name = 'cifar100'
  config.model.name = 'lenet5'  # each run sets its own model from config.study
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 1e-4
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 100

  config.study = ml_collections.ConfigDict()
  config.study.seeds = 15  # baseline runs per model
  # The baseline's and experiment 1's architectures, and experiment 2's.
  config.study.models = ml_collections.ConfigDict({
      'mlp': {'name': 'mlp', 'hidden': (1024,)},
      'lenet5': {'name': 'lenet5'}})
  config.study.exp2_models = ml_collections.ConfigDict({
      'mlp': {'name': 'mlp', 'hidden': (1024, 512), 'dropout': 0.5},
      'lenet5': {'name': 'lenet5', 'batch_norm': True, 'extra_dense': 84}})
  # Experiments 1 and 2: each model's OneCycle peak and start = peak / div_factor ...
  config.study.onecycle = ml_collections.ConfigDict({
      'mlp': {'learning_rate': 1e-4, 'onecycle_div_factor': 25.0},
      'lenet5': {'learning_rate': 0.01, 'onecycle_div_factor': 50.0}})
  # ... and what both models share there (overrides of the config's sections).
  config.study.tuned = ml_collections.ConfigDict({
      'optimizer': {'schedule': 'onecycle', 'clip_global_norm': 1.0, 'weight_decay': 1e-3},
      'augment': {'flip_prob': 0.1, 'rotate_degrees': 20.0, 'color_jitter': (0.1, 0.1, 0.1),
                  'sharpness': (2.0, 0.1)},
      'data': {'mean': CIFAR100_MEAN, 'std': CIFAR100_STD}})
  # The transfer: overrides of the best LeNet run's config (its model, normalisation,
  # transforms and OneCycle are kept).
  config.transfer = ml_collections.ConfigDict({
      'data': {'name': 'stl10', 'root': '', 'classes': STL5, 'train_split': 'train',
               'eval_split': 'test', 'resize_shorter': 32, 'crop_size': 32},
      'num_epochs': 30})
  if mode == 'smoke':
    common.smoke(config, image_size=32)
    config.study.seeds = 3
    config.study.models.mlp.hidden = (32,)
    config.study.exp2_models.mlp.hidden = (32, 16)
    config.study.tuned.data.mean = config.study.tuned.data.std = ()  # digits are grey
    config.transfer.data = ml_collections.ConfigDict({'name': 'digits',
                                                      'classes': ('0', '1', '2', '3', '4')})
    config.transfer.num_epochs = 2
  return config
