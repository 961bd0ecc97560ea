"""grain pipelines: exact eval passes, per-epoch reshuffles, resumable streams."""

import math

import numpy as np
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import batch_ops, pipeline, sources, transforms
from tinyimagenet_jax.errors import ConfigError


def numbered_source(size: int) -> sources.ArraySource:
  """Records whose label is their index, and whose pixels encode it too."""
  images = (np.arange(size, dtype=np.int64)[:, None, None, None] % 251).astype(np.uint8)
  return sources.ArraySource(np.broadcast_to(images, (size, 4, 4, 3)).copy(),
                             np.arange(size), ('x',))


DATA = config_lib.base_config().data
IDENTITY = transforms.Preprocess()


@pytest.mark.parametrize('size, batch', [(1, 16), (7, 16), (64, 16), (65, 16), (100, 32)])
def test_eval_sees_every_example_exactly_once(size, batch):
  batches = list(pipeline.iterate(pipeline.eval_dataset(numbered_source(size), IDENTITY, batch), DATA))
  assert len(batches) == math.ceil(size / batch)
  assert all(len(b['label']) == batch and len(b['mask']) == batch for b in batches)
  seen = np.concatenate([b['label'][b['mask']] for b in batches])
  assert sorted(seen.tolist()) == list(range(size))
  assert sum(int(b['mask'].sum()) for b in batches) == size


def take(stream, count: int) -> list[dict]:
  return [next(stream) for _ in range(count)]


def test_each_epoch_is_a_fresh_permutation_of_whole_batches():
  size, batch = 100, 16  # 6 whole batches; 4 records dropped per epoch
  dataset = pipeline.train_dataset(numbered_source(size), IDENTITY, batch, seed=3)
  epochs = [np.concatenate([b['label'] for b in take(pipeline.iterate(dataset, DATA, start=e * 6), 6)])
            for e in range(3)]
  for labels in epochs:
    assert len(labels) == 96 and len(set(labels.tolist())) == 96
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_stream_is_a_function_of_seed_and_step():
  source = numbered_source(50)
  train, _ = transforms.make_preprocess(config_with_augmentation())
  dataset = pipeline.train_dataset(source, train, 8, seed=0)
  whole = take(pipeline.iterate(dataset, DATA), 9)
  resumed = pipeline.iterate(dataset, DATA, start=7)
  for expected in whole[7:]:
    got = next(resumed)
    assert np.array_equal(got['label'], expected['label'])
    assert np.array_equal(got['image'], expected['image'])
  other = next(pipeline.iterate(pipeline.train_dataset(source, train, 8, seed=1), DATA))
  assert not np.array_equal(other['label'], whole[0]['label'])


def config_with_augmentation():
  config = config_lib.base_config()
  config.augment.flip_prob = 0.5
  config.augment.pad_crop = 2
  return config


def test_train_batches_have_model_dtypes():
  train, _ = transforms.make_preprocess(config_with_augmentation())
  batch = next(pipeline.iterate(pipeline.train_dataset(numbered_source(20), train, 4, 0), DATA))
  assert batch['image'].shape == (4, 4, 4, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32


def test_worker_processes_give_the_same_stream_as_threads(cifar10_folder):
  """Sources and transforms pickle into grain's spawned workers unchanged."""
  source = sources.image_folder(str(cifar10_folder), 'test')
  train, _ = transforms.make_preprocess(config_with_augmentation())
  dataset = pipeline.train_dataset(source, train, 32, seed=0)
  data = config_lib.base_config().data
  threaded = take(pipeline.iterate(dataset, data, start=5), 3)
  data.num_workers = 2
  workers = pipeline.iterate(dataset, data, start=5)
  for expected, got in zip(threaded, take(workers, 3)):
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])
  workers.close()



def test_batch_transform_mixes_whole_batches_reproducibly():
  train, _ = transforms.make_preprocess(config_lib.base_config())
  config = config_lib.base_config()
  config.augment.mixup_alpha = 0.4
  mix = batch_ops.make_batch_transform(config)
  dataset = pipeline.train_dataset(numbered_source(40), train, 8, seed=0, batch_transform=mix)
  first, again = next(pipeline.iterate(dataset, DATA, 3)), next(pipeline.iterate(dataset, DATA, 3))
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['mix_label'], first['label'][::-1])
  weight = first['mix_weight'][0]
  plain = next(pipeline.iterate(pipeline.train_dataset(numbered_source(40), train, 8, seed=0),
                                DATA, 3))
  np.testing.assert_allclose(first['image'],
                             weight * plain['image'] + (1 - weight) * plain['image'][::-1],
                             rtol=1e-6)


def test_processes_read_their_own_rows_of_each_global_train_batch():
  """Concatenated in process order, the processes' rows are the single-process batch,
  across epoch ends (100 records: 3 batches of 32 an epoch, 4 dropped)."""
  train, _ = transforms.make_preprocess(config_with_augmentation())
  source = numbered_source(100)
  whole = take(pipeline.iterate(pipeline.train_dataset(source, train, 32, seed=1), DATA), 7)
  parts = [take(pipeline.iterate(pipeline.train_dataset(source, train, 32, 1, None, index, 4),
                                 DATA), 7) for index in range(4)]
  for step, expected in enumerate(whole):
    for key in ('image', 'label'):
      assert all(len(part[step][key]) == 8 for part in parts)
      np.testing.assert_array_equal(np.concatenate([part[step][key] for part in parts]),
                                    expected[key])


@pytest.mark.parametrize('size', [97, 96, 5])
def test_processes_get_as_many_eval_batches_and_together_the_single_process_ones(size):
  """97 records in batches of 32 over 4 processes: the last global batch holds one real
  record, so processes 1-3 get a batch of padding only, and no process runs short."""
  source = numbered_source(size)
  whole = list(pipeline.iterate(pipeline.eval_dataset(source, IDENTITY, 32), DATA))
  parts = [list(pipeline.iterate(pipeline.eval_dataset(source, IDENTITY, 32, index, 4), DATA))
           for index in range(4)]
  assert [len(part) for part in parts] == [len(whole)] * 4 == [math.ceil(size / 32)] * 4
  for step, expected in enumerate(whole):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(np.concatenate([part[step][key] for part in parts]),
                                    expected[key])


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
  with pytest.raises(ConfigError, match='multiples of 3'):
    pipeline.train_dataset(numbered_source(40), IDENTITY, 16, 0, None, 0, 3)
  with pytest.raises(ConfigError, match='multiples of 3'):
    pipeline.eval_dataset(numbered_source(40), IDENTITY, 16, 0, 3)
