"""bench.pipeline_vs_tfdata's tf.data reference computes what grain computes; bench.memory's
per-epoch bookkeeping."""

import io
import json

import ml_collections
import numpy as np
from PIL import Image
import pytest

from tinyimagenet_jax.bench import memory
from tinyimagenet_jax.bench import pipeline_vs_tfdata as bench
from tinyimagenet_jax.data import decoded_cache, pipeline, sources, transforms

tf = pytest.importorskip('tensorflow')

# (height, width, mode) of the test images: both orientations, and a greyscale one.
IMAGES = ((40, 56, 'RGB'), (64, 48, 'RGB'), (64, 64, 'L'))


def smooth_image(height: int, width: int, mode: str, seed: int) -> Image.Image:
  """A photo-like image (smooth gradients and blobs), which JPEG keeps close to itself."""
  rows, columns = np.mgrid[0:height, 0:width] / max(height, width)
  phases = np.random.default_rng(seed).uniform(0, 6, size=3)
  channels = [np.sin(4 * rows + phase) * np.cos(3 * columns - phase) for phase in phases]
  pixels = np.round(127.5 + 120 * np.stack(channels, -1)).astype(np.uint8)
  return Image.fromarray(pixels).convert(mode)


def locations(root: str = '') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'root': root, 'data_dir': '', 'cache_dir': ''})


def first_tf_batch(dataset) -> dict:
  return next(dataset.as_numpy_iterator())


@pytest.mark.parametrize('case', ['cifar10', 'alexnet224'])
def test_tf_reference_decodes_and_crops_jpeg_files_as_grain(tmp_path, case):
  for index, (height, width, mode) in enumerate(IMAGES):
    folder = tmp_path / 'train' / f'class{index % 2}'
    folder.mkdir(parents=True, exist_ok=True)
    smooth_image(height, width, mode, index).save(folder / f'{index}.jpg', quality=75)
  config = bench.CASES[case](locations(str(tmp_path)))
  config.data.resize_shorter = config.data.resize_shorter or 64  # one size, one batch
  config.data.crop_size = config.data.crop_size or 40
  source = sources.image_folder(str(tmp_path), 'train')
  _, eval_transform = transforms.make_preprocess(config)
  grain_batch = pipeline.eval_dataset(source, eval_transform, len(IMAGES))[0]
  tf_batch = first_tf_batch(bench.tf_files_dataset(
      source.paths, source.labels, bench.tf_preprocess(config, train_mode=False), len(IMAGES),
      shuffle_seed=None))
  np.testing.assert_array_equal(tf_batch['label'], grain_batch['label'])
  assert tf_batch['image'].shape == grain_batch['image'].shape
  np.testing.assert_allclose(tf_batch['image'], grain_batch['image'], atol=1e-5)


def serialized_example(image: np.ndarray, label: int) -> bytes:
  """A TFDS-style tf.Example: the image as PNG bytes, and its label."""
  encoded = io.BytesIO()
  Image.fromarray(image).save(encoded, 'PNG')
  feature = {'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded.getvalue()])),
             'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize('case', ['tiny64', 'alexnet224'])
def test_tf_reference_parses_serialized_records_as_grain(case):
  images = [np.asarray(smooth_image(64, 64, 'RGB', seed)) for seed in range(3)]
  records = [serialized_example(image, label) for label, image in enumerate(images)]
  config = bench.CASES[case](locations())
  _, eval_transform = transforms.make_preprocess(config)
  expected = [eval_transform({'image': image, 'label': 0})['image'] for image in images]
  tf_batch = first_tf_batch(bench.tf_records_dataset(
      records, bench.tf_preprocess(config, train_mode=False), len(records), shuffle_seed=None))
  np.testing.assert_array_equal(tf_batch['label'], [0, 1, 2])
  np.testing.assert_allclose(tf_batch['image'], np.stack(expected), atol=1e-5)


def test_tf_reference_reads_the_decoded_cache_as_grain(tmp_path):
  for index in range(3):
    folder = tmp_path / 'train' / f'class{index % 2}'
    folder.mkdir(parents=True, exist_ok=True)
    smooth_image(64, 64, 'RGB', index).save(folder / f'{index}.png')
  config = bench.CASES['tiny64_decoded'](locations(str(tmp_path)))
  assert config.data.decoded_cache
  source = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'),
                                 str(tmp_path / 'cache'))
  _, eval_transform = transforms.make_preprocess(config)
  grain_batch = pipeline.eval_dataset(source, eval_transform, 3)[0]
  tf_batch = first_tf_batch(bench.tf_pixels_dataset(
      np.stack([source[i]['image'] for i in range(3)]), source.labels,
      bench.tf_preprocess(config, train_mode=False), 3, shuffle_seed=None))
  np.testing.assert_array_equal(tf_batch['label'], grain_batch['label'])
  np.testing.assert_allclose(tf_batch['image'], grain_batch['image'], atol=1e-6)


@pytest.mark.parametrize('degrees', [-15.0, 7.5, 90.0])
def test_tf_rotate_matches_transforms_rotate(degrees):
  image = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
  rotated = bench.tf_rotate(tf, tf.constant(image), degrees).numpy()
  np.testing.assert_allclose(rotated, transforms.rotate(image, degrees), atol=1e-5)


@pytest.mark.parametrize('case', list(bench.CASES))
def test_tf_training_batches_have_grain_shapes(case):
  config = bench.CASES[case](locations())
  records = [serialized_example(np.asarray(smooth_image(64, 64, 'RGB', seed)), seed)
             for seed in range(4)]
  train_transform, _ = transforms.make_preprocess(config)
  grain_image = train_transform({'image': np.asarray(smooth_image(64, 64, 'RGB', 0)),
                                 'label': 0}, np.random.default_rng(0))['image']
  tf_batch = first_tf_batch(bench.tf_records_dataset(
      records, bench.tf_preprocess(config, train_mode=True), 2))
  assert tf_batch['image'].shape == (2, *grain_image.shape)
  assert tf_batch['image'].dtype == np.float32


def test_tf_reference_refuses_augmentations_it_lacks():
  config = bench.CASES['cifar10'](locations())
  config.augment.contrast = (0.7, 1.3)
  with pytest.raises(ValueError, match="no 'contrast' augmentation"):
    bench.tf_preprocess(config, train_mode=True)


def test_epoch_rows_take_each_epochs_peak_and_last_sample():
  samples = [(0, 100.0), (0, 250.0), (0, 180.0), (1, 190.0), (1, 185.0), (2, 186.0),
             (3, 400.0)]  # the last one is teardown, after epoch 3 was written
  assert memory.epoch_rows(samples, 3) == [
      {'epoch': 1, 'peak_rss_mb': 250.0, 'end_rss_mb': 180.0},
      {'epoch': 2, 'peak_rss_mb': 190.0, 'end_rss_mb': 185.0},
      {'epoch': 3, 'peak_rss_mb': 186.0, 'end_rss_mb': 186.0}]


def test_epochs_written_counts_metrics_lines(tmp_path):
  assert memory.epochs_written(str(tmp_path)) == 0
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps({'epoch': e}) + '\n'
                                                  for e in (1, 2)))
  assert memory.epochs_written(str(tmp_path)) == 2
