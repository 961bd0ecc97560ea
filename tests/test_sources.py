"""Sources: digits, image folders on the real CIFAR-10 JPEGs, TFDS under mock_data."""

import pickle
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.errors import DataError

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')


def test_digits_splits_are_disjoint_and_complete():
  train, test = sources.digits('train'), sources.digits('test')
  assert (len(train), len(test)) == (1437, 360)
  pairs = {(train.images[i].tobytes(), int(train.labels[i])) for i in range(len(train))}
  record = test[0]
  assert record['image'].shape == (8, 8, 1) and record['image'].dtype == np.uint8
  assert record['image'].max() <= 255 and len(train.class_names) == 10
  assert np.bincount(np.concatenate([train.labels, test.labels])).sum() == 1797
  assert len(pairs) > 1400


def test_digits_are_scikit_learns_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  pixels, labels = sources.digits_table()
  bunch = datasets.load_digits()
  np.testing.assert_array_equal(pixels, bunch.images)
  np.testing.assert_array_equal(labels, bunch.target)


def test_image_folder_reads_the_real_cifar10(cifar10_folder):
  train = sources.image_folder(str(cifar10_folder), 'train')
  test = sources.image_folder(str(cifar10_folder), 'test')
  assert (len(train), len(test)) == (50_000, 10_000)
  assert train.class_names == CIFAR10_CLASSES
  assert np.bincount(train.labels).tolist() == [5000] * 10
  assert np.bincount(test.labels).tolist() == [1000] * 10
  record = train[12_345]
  assert record['image'].shape == (32, 32, 3) and record['image'].dtype == np.uint8
  assert train.paths[12_345].split('/')[-2] == CIFAR10_CLASSES[record['label']]


def test_image_folder_missing_root_names_the_root(tmp_path):
  for root in (str(tmp_path / 'nowhere'), ''):
    with pytest.raises(DataError) as error:
      sources.image_folder(root, 'test')
    assert str(error.value) == (
        f'config.data.root={root!r} is not a folder; set --config.data.root to the folder'
        ' holding <split>/<class>/*.jpg.')


def test_image_folder_missing_split_is_one_clear_error(tmp_path):
  with pytest.raises(DataError, match=r'train.*config\.data\.root'):
    sources.image_folder(str(tmp_path), 'train')


def test_a_batch_larger_than_the_data_is_refused_before_any_decoding(tmp_path):
  for split in ('train', 'test'):
    for index in range(6):
      folder = tmp_path / 'data' / split / ('a', 'b')[index % 2]
      folder.mkdir(parents=True, exist_ok=True)
      Image.new('RGB', (4, 4)).save(folder / f'{index}.png')
  data = config_lib.base_config().data
  data.name, data.root = 'image_folder', str(tmp_path / 'data')
  data.decoded_cache, data.cache_dir = True, str(tmp_path / 'cache')
  data.validation_size = 2
  with pytest.raises(ConfigError) as error:
    sources.load_splits(data, seed=0, batch_size=5)
  assert str(error.value) == ('config.batch_size=5 is larger than the 4 training examples; use a'
                              ' smaller batch.')
  assert len(list((tmp_path / 'cache').glob('*.labels.npy'))) == 1  # the eval split's alone


def test_image_folder_without_images_is_one_clear_error(tmp_path):
  (tmp_path / 'train' / 'cat').mkdir(parents=True)
  (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('no images here')
  with pytest.raises(DataError, match=r'/train\b.*\.jpg'):
    sources.image_folder(str(tmp_path), 'train')


def test_validation_split_partitions_train():
  source = sources.ArraySource(np.zeros((50_000, 1, 1, 1), np.uint8),
                               np.arange(50_000), ('x',))
  train, val = sources.split_off_validation(source, 5000, seed=0)
  assert (len(train), len(val)) == (45_000, 5000)
  train_ids = {train[i]['label'] for i in range(len(train))}
  val_ids = {val[i]['label'] for i in range(len(val))}
  assert not train_ids & val_ids and len(train_ids | val_ids) == 50_000
  again, _ = sources.split_off_validation(source, 0.1, seed=0)
  assert np.array_equal(again.indices, train.indices)
  other, _ = sources.split_off_validation(source, 0.1, seed=1)
  assert not np.array_equal(other.indices, train.indices)


def test_subset_views_relabel_keep_names_and_pickle():
  source = sources.ArraySource(np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1),
                               np.array([0, 1, 2, 0, 1, 2]), ('a', 'b', 'c'))
  kept = sources.keep_classes(source, ('c', 'a'), 'toy')
  assert kept.class_names == ('c', 'a') and len(kept) == 4
  assert [(kept.name(i), kept[i]['label']) for i in range(4)] == [
      ('0', 1), ('2', 0), ('3', 1), ('5', 0)]
  train, val = sources.split_off_validation(kept, 1, seed=0)
  assert train.class_names == val.class_names == ('c', 'a')
  assert {train.name(i) for i in range(3)} | {val.name(0)} == {'0', '2', '3', '5'}
  copy = pickle.loads(pickle.dumps(train))  # as grain worker processes receive it
  assert [copy[i]['label'] for i in range(3)] == [train[i]['label'] for i in range(3)]


def test_validation_split_that_leaves_nothing_is_refused():
  source = sources.ArraySource(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10), ('x',))
  with pytest.raises(DataError, match=r'config\.data\.validation_size=10\b.*\b10\b'):
    sources.split_off_validation(source, 10, seed=0)


def test_tfds_source_under_mock_data():
  data = config_lib.base_config().data
  data.name = 'cifar10'
  # mock_data stands in for a prepared dataset but leaves is_prepared() False.
  with tfds.testing.mock_data(num_examples=13), mock.patch.object(
      tfds.core.DatasetBuilder, 'is_prepared', return_value=True):
    splits = sources.load_splits(data, seed=0)
  assert len(splits.train) == 13 and list(splits.evals) == ['test']
  assert len(splits.class_names) == 10  # mock data carries no label names
  record = splits.train[3]
  assert set(record) == {'image', 'label'}
  assert record['image'].shape == (32, 32, 3) and 0 <= record['label'] < 10


def unprepared_mnist(tmp_path, download: bool):
  data = config_lib.base_config().data
  data.data_dir = str(tmp_path)
  data.download = download
  return data


def test_tfds_unprepared_and_download_off_is_one_clear_error(tmp_path):
  with pytest.raises(DataError) as error:
    sources.tfds_source('mnist', 'train', unprepared_mnist(tmp_path, download=False))
  assert all(name in str(error.value) for name in ("'mnist'", str(tmp_path),
                                                   'config.data.download'))


def test_tfds_build_without_tensorflow_is_refused_before_downloading(tmp_path):
  with mock.patch.object(sources, 'tensorflow_available', return_value=False), \
       mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare') as prepare:
    with pytest.raises(DataError) as error:
      sources.tfds_source('mnist', 'train', unprepared_mnist(tmp_path, download=True))
  prepare.assert_not_called()
  assert all(name in str(error.value) for name in ("'mnist'", str(tmp_path), '.[build]'))


def test_tfds_failed_download_is_one_clear_error(tmp_path):
  offline = ConnectionError('Failed to resolve storage.googleapis.com\nretrying...')
  with mock.patch.object(sources, 'tensorflow_available', return_value=True), \
       mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare', side_effect=offline):
    with pytest.raises(DataError) as error:
      sources.tfds_source('mnist', 'train', unprepared_mnist(tmp_path, download=True))
  message = str(error.value)
  assert all(name in message for name in ("'mnist'", str(tmp_path), 'config.data.manual_dir'))
  assert 'Failed to resolve storage.googleapis.com' in message and '\n' not in message
