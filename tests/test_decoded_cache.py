"""The decoded cache: the parent's records exactly, decoded once, rebuilt when the data changes."""

import pickle

import numpy as np
from PIL import Image
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import decoded_cache
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.errors import DataError


def write_folder(root, sizes=((6, 5),) * 7) -> None:
  """root/train/<class>/<n>.png: len(sizes) random images over two classes."""
  rng = np.random.default_rng(0)
  for index, (height, width) in enumerate(sizes):
    folder = root / 'train' / ('cat', 'dog')[index % 2]
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f'{index}.png')


def test_cache_gives_the_parents_records_and_names(tmp_path):
  write_folder(tmp_path)
  parent = sources.image_folder(str(tmp_path), 'train')
  cached = decoded_cache.decoded(parent, str(tmp_path / 'cache'))
  assert isinstance(cached, decoded_cache.DecodedSource)
  assert len(cached) == len(parent) == 7 and cached.class_names == ('cat', 'dog')
  for index in range(len(parent)):
    assert cached.name(index) == parent.name(index)
    assert cached[index]['label'] == parent[index]['label']
    np.testing.assert_array_equal(cached[index]['image'], parent[index]['image'])
    assert cached[index]['image'].dtype == np.uint8
  np.testing.assert_array_equal(cached.labels, parent.labels)


def test_a_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
  write_folder(tmp_path)
  parent = sources.image_folder(str(tmp_path), 'train')
  first = decoded_cache.decoded(parent, str(tmp_path / 'cache'))

  def fail(*args):
    raise AssertionError('decoded again')

  monkeypatch.setattr(decoded_cache, 'decode_all', fail)
  second = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'),
                                 str(tmp_path / 'cache'))
  assert second.path == first.path
  np.testing.assert_array_equal(second[3]['image'], parent[3]['image'])


def test_a_changed_file_gets_a_new_cache(tmp_path):
  write_folder(tmp_path)
  cache_dir = str(tmp_path / 'cache')
  before = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'), cache_dir)
  changed = tmp_path / 'train' / 'cat' / '0.png'
  Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(changed)
  after = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'), cache_dir)
  assert after.path != before.path
  assert not after[0]['image'].any() and before[0]['image'].any()


def test_the_cached_source_pickles_for_worker_processes(tmp_path):
  write_folder(tmp_path)
  cached = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'),
                                 str(tmp_path / 'cache'))
  restored = pickle.loads(pickle.dumps(cached))
  np.testing.assert_array_equal(restored[5]['image'], cached[5]['image'])


def test_images_of_different_sizes_are_one_clear_error_and_leave_no_cache(tmp_path):
  write_folder(tmp_path, sizes=((6, 5), (6, 5), (7, 5)))
  with pytest.raises(DataError, match=r'images of one size; record 1 \(2.png\) is \(7, 5, 3\)'):
    decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'), str(tmp_path / 'cache'))
  assert not list((tmp_path / 'cache').iterdir())


def test_in_memory_sources_are_returned_as_they_are(tmp_path):
  digits = sources.digits('test')
  assert decoded_cache.decoded(digits, str(tmp_path)) is digits


def test_load_reads_the_cache_and_keeps_the_chosen_classes(tmp_path):
  write_folder(tmp_path)
  config = config_lib.base_config()
  config.data.name, config.data.root = 'image_folder', str(tmp_path)
  config.data.decoded_cache, config.data.cache_dir = True, str(tmp_path / 'cache')
  config.data.classes = ('dog',)
  source = sources.load(config.data, 'train')
  assert isinstance(source.parent, decoded_cache.DecodedSource)
  assert len(source) == 3 and {source[i]['label'] for i in range(3)} == {0}
  assert len(list((tmp_path / 'cache').glob('*.npy'))) == 2
