"""Each model family learns on real images: a few steps on one real batch lower the loss.

Measured here (2 CPU cores; loss at the first step -> after the last): mlp
2.381 -> 0.545, lenet5 2.302 -> 0.142, conv3_bn 2.988 -> 0.008 (10 steps on 10
CIFAR-10 images); tiny_m1 2.278 -> 0.476 (10 steps); vgg16 2.940 -> 0.300,
resnet18 2.688 -> 0.015 (4 steps); alexnet (224x224) 2.291 -> 1.197 (6 steps),
each on 8 Tiny ImageNet images. The assertion asks only for a clear fall (below
0.7 of the first loss), not those figures. The three big models take the fewest
steps that leave a wide margin (ratios 0.10, 0.01 and 0.52), as their steps cost
seconds each on a CPU; 16 images gave 0.35, 0.09 and 0.52 in a fifth more time."""

import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import models, optim, steps
from tinyimagenet_jax.data import sources, transforms
from tinyimagenet_jax.state import create_train_state


def first_image(folder: pathlib.Path) -> pathlib.Path:
  """The first image file under `folder`, in sorted order."""
  return next(f for f in sorted(folder.rglob('*')) if f.suffix.lower() in sources.IMAGE_SUFFIXES)


def real_batch(root: pathlib.Path, size: int, count: int, resize: int = 0,
               crop: int = 0) -> dict:
  """`count` real images of distinct classes, preprocessed as a config would."""
  config = config_lib.base_config()
  config.data.resize_shorter, config.data.crop_size = resize, crop
  _, preprocess = transforms.make_preprocess(config)
  class_dirs = sorted(p for p in root.iterdir() if p.is_dir())[:count]
  records = [{'image': sources.decode_image(str(first_image(d))), 'label': index % 10}
             for index, d in enumerate(class_dirs)]
  batch = [preprocess(record) for record in records]
  images = np.stack([b['image'] for b in batch])
  assert images.shape[1:3] == (size, size)
  return {'image': images, 'label': np.array([b['label'] for b in batch], np.int32)}


TINY_IMAGES = 8  # a batch of 8 Tiny ImageNet classes' first images

# (model options, optimizer, learning rate, steps, image size, which data)
CASES = {
    'mlp': ({'name': 'mlp', 'hidden': (256,)}, 'sgd', 0.05, 10, 32, 'cifar'),
    'lenet5': ({'name': 'lenet5', 'activation': 'relu', 'pool': 'max'}, 'adam', 3e-3, 10, 32,
               'cifar'),
    'conv3_bn': ({'name': 'conv3_bn'}, 'adam', 1e-3, 10, 32, 'cifar'),
    'tiny_m1': ({'name': 'tiny_m1', 'dropout': 0.0}, 'adam', 1e-3, 10, 64, 'tiny'),
    'vgg16': ({'name': 'vgg16', 'hidden': (256,), 'dropout': 0.0, 'batch_norm': True}, 'adam',
              1e-3, 4, 64, 'tiny'),
    'resnet18': ({'name': 'resnet18'}, 'adam', 1e-3, 4, 64, 'tiny'),
    'alexnet': ({'name': 'alexnet', 'dropout': 0.0}, 'adam', 1e-4, 6, 224, 'tiny'),
}


@pytest.fixture(scope='module')
def batches(request) -> dict:
  """The real batches, built lazily so a run of one case extracts one archive."""
  cache = {}

  def get(which: str, size: int) -> dict:
    if (which, size) not in cache:
      if which == 'cifar':
        root = request.getfixturevalue('cifar10_folder') / 'train'
        cache[which, size] = real_batch(root, size, count=10)
      else:
        root = request.getfixturevalue('tiny_root') / 'train'
        cache[which, size] = (real_batch(root, size, TINY_IMAGES, resize=256, crop=224)
                              if size == 224 else real_batch(root, size, TINY_IMAGES))
    return cache[which, size]
  return get


@pytest.mark.parametrize('family', sorted(CASES))
def test_loss_falls_on_real_images(family, batches):
  options, optimizer, learning_rate, num_steps, size, which = CASES[family]
  batch = batches(which, size)
  model = models.build_model(ml_collections.ConfigDict(options), 10)
  opt = config_lib.base_config().optimizer
  opt.name, opt.learning_rate = optimizer, learning_rate
  state = create_train_state(model, optim.build_optimizer(opt, num_steps, 1), 0,
                             batch['image'].shape[1:])
  step = jax.jit(steps.train_step)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  print(f'{family}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {num_steps} steps')
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.7 * losses[0], losses
