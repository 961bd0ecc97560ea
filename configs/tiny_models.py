"""Third report: linear, 2-layer CNN, multi-layer CNN, ResNet + CNN and VGG16
(transfer learning, layer-wise fine-tuning) on Tiny ImageNet.

    python launch.py --config=configs/tiny_models.py --config.init_from=vgg16_notop.h5
    python launch.py --config=configs/tiny_models.py --config.mode=evaluate
    python launch.py --config=configs/tiny_models.py:smoke   # seconds, offline

All 200 classes; 10,000 training images carved off as the validation split, the
official validation split as the test split (the official test split is
unlabelled). The report's augmentation: horizontal flip, translation, rotation
and contrast 0.7-1.3 (it gives no amounts for the first three: 0.5, 10 % and 15
degrees here). The report gives no optimizer, epochs or widths: Adam lr 1e-3,
batch 128, 20 epochs for every run; cnn2, cnn_multi and resnet_cnn as their
docstrings in models/ say. VGG16: the conv base (14,714,688 parameters, the
report's table) with a Flatten -> Dense 512 -> dropout 0.5 -> Dense 200 head.
vgg16_transfer trains only the head; vgg16_finetune trains the head, then
unfreezes block 5 after epoch 4, block 4 after 8, block 3 after 12 and block 2
after 16 (block 1 stays frozen), at lr 1e-4. Both start from --config.init_from,
a Keras VGG16 .h5 (e.g. vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, made
with keras.applications.VGG16(include_top=False).save_weights(...), see
WORKSPACE.md), with Keras's input scaling (pixels 0..255 minus the ImageNet
means; Keras's channel order is BGR, ours RGB, so the first layer sees swapped
colours); without it they train from scratch, as the table's initialised_from
column says.

Expected (the report, final train / validation accuracy): linear 44.9 / 8.38 %,
2-layer CNN 95.2 / 14.9 %, multi-layer CNN 96.1 / 16.3 %; ResNet + CNN better
than the CNNs; VGG16's numbers are only in its figures. Writes into
runs/tiny_models what tinyimagenet_jax/experiments/tiny_models.py lists.

Offline here, the prepared dataset: --config.data.data_dir=/tmp/tfds_data
--config.data.download=False. Time here (2 CPU cores): the smoke 7-10 s, 15-18 s on
an empty compilation cache (the machine's speed varies by up to 1.5x); VGG16 at
64x64 trains at a few images per second, so the full comparison wants a GPU (with
--config.data.num_workers set to feed it). See WORKSPACE.md.
"""

import ml_collections

from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.experiments import common

# Per channel over the 100,000 training images scaled to [0, 1] (WORKSPACE.md).
TINY_IMAGENET_MEAN = (0.48024, 0.44807, 0.39750)
TINY_IMAGENET_STD = (0.27644, 0.26886, 0.28159)
# Keras's VGG16 input: pixels 0..255 minus the ImageNet channel means (BGR 103.939,
# 116.779, 123.68), i.e. (x - mean) / (1 / 255) with x in [0, 1], here in RGB order.
KERAS_VGG16_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)
KERAS_VGG16_STD = (1 / 255,) * 3
VGG16_BLOCKS = ('block1', 'block2', 'block3', 'block4', 'block5')


def get_config(mode: str = 'full'):
  config = base_config()
  config.experiment = 'tiny_models'
  config.data.name = 'tiny_imagenet'
  config.data.eval_split = 'validation'
  config.data.validation_size = 10_000
  config.data.mean, config.data.std = TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
  config.augment.flip_prob = 0.5
  config.augment.translate = 0.1
  config.augment.rotate_degrees = 15.0
  config.augment.contrast = (0.7, 1.3)
  config.model.name = 'linear'  # each run sets its own model
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 20
  config.best_metric = 'val_top1'
  config.init_from = ''  # the Keras VGG16 .h5 of the pretrained runs; '' = from scratch

  config.tiny_models = ml_collections.ConfigDict()
  vgg16 = {'name': 'vgg16', 'hidden': (512,)}
  config.tiny_models.runs = ml_collections.ConfigDict({  # in table order
      'linear': {'model': {'name': 'linear'}},
      'cnn2': {'model': {'name': 'cnn2'}},
      'cnn_multi': {'model': {'name': 'cnn_multi'}},
      'resnet_cnn': {'model': {'name': 'resnet_cnn'}},
      'vgg16_transfer': {'model': dict(vgg16), 'optimizer': {
          'freeze': tuple(f'{block}@inf' for block in VGG16_BLOCKS)}},
      'vgg16_finetune': {'model': dict(vgg16), 'optimizer': {
          'learning_rate': 1e-4,
          'freeze': ('block1@inf', 'block2@16', 'block3@12', 'block4@8', 'block5@4')}},
  }, sort_keys=False)
  config.tiny_models.pretrained_runs = ('vgg16_transfer', 'vgg16_finetune')
  config.tiny_models.pretrained_data = ml_collections.ConfigDict(
      {'mean': KERAS_VGG16_MEAN, 'std': KERAS_VGG16_STD})
  if mode == 'smoke':
    common.smoke(config, steps=2, epochs=2, image_size=32)  # VGG16's 5 pools need 32x32
    config.data.validation_size = 200
    # Narrow models; no dropout, whose random masks take most of a CPU compile.
    runs = config.tiny_models.runs
    runs.cnn2.model.update(stages=(((3, 4),), ((3, 8),)), hidden=(16,), dropout=0.0,
                           stage_dropout=0.0)
    runs.cnn_multi.model.update(stages=(((3, 4),), ((3, 4),), ((3, 8),), ((3, 8),)),
                                hidden=(16,), dropout=0.0, stage_dropout=0.0)
    runs.resnet_cnn.model.widths = (4, 8)
    for name in config.tiny_models.pretrained_runs:
      runs[name].model.update(widths=(4, 4, 8, 8, 8), hidden=(16,), dropout=0.0)
    runs.vgg16_finetune.optimizer.freeze = (
        'block1@inf', 'block2@inf', 'block3@inf', 'block4@inf', 'block5@1')
    config.tiny_models.pretrained_data.update(mean=(), std=())  # digits are grey
  return config
