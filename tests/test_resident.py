"""The device path: splits resident on the devices, batches gathered there, several steps a call."""

import jax
import numpy as np
import pytest

from tinyimagenet_jax import build, evaluation, programs, train, writers
from tinyimagenet_jax.data import decoded_cache, device_ops, resident, sources
from tinyimagenet_jax.errors import ConfigError


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch():
  orders = [np.asarray(resident.epoch_order(7, epoch, 1437)) for epoch in (0, 1, 0)]
  assert sorted(orders[0]) == list(range(1437))
  assert not np.array_equal(orders[0], orders[1])
  np.testing.assert_array_equal(orders[0], orders[2])
  assert not np.array_equal(orders[0], np.asarray(resident.epoch_order(8, 0, 1437)))


def test_the_device_paths_epoch_order_program_draws_the_same_permutations(digits_config):
  """The run's epoch-order program is compiled with the run-once options; its orders are
  those of resident.epoch_order compiled as XLA's defaults compile it."""
  digits_config.data.placement = 'device'
  path = build.build(digits_config).device
  count = len(path.splits['train'].labels)
  for epoch in (0, 1, 14):
    np.testing.assert_array_equal(
        np.asarray(path.epoch_order(epoch)),
        np.asarray(jax.jit(resident.epoch_order, static_argnums=(0, 2))(
            digits_config.seed, epoch, count)))


def test_a_resident_split_holds_the_sources_records_in_order():
  source = sources.digits('test')
  split = resident.put_resident(source, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  np.testing.assert_array_equal(np.asarray(split.images), source.images)
  np.testing.assert_array_equal(np.asarray(split.labels), source.labels)
  assert resident.split_bytes(source) == 360 * (8 * 8 + 4)


def test_whole_array_reads_equal_reading_record_by_record(tmp_path):
  """Subsets, relabellings and the decoded cache are read as whole arrays; the result must be
  the records a pipeline reads, in order."""
  from test_decoded_cache import write_folder  # pylint: disable=g-import-not-at-top
  write_folder(tmp_path)
  cached = decoded_cache.decoded(sources.image_folder(str(tmp_path), 'train'),
                                 str(tmp_path / 'cache'))
  relabelled = sources.SubsetSource(cached, np.array([6, 1, 4, 1]), np.array([1, 0]),
                                    ('dog', 'cat'))
  digits = sources.SubsetSource(sources.digits('test'), np.arange(359, 0, -7))
  for source in (cached, relabelled, digits, sources.SubsetSource(digits, np.array([3, 0]))):
    whole, one_by_one = resident.host_arrays(source), resident.records_as_arrays(source)
    for got, expected in zip(whole, one_by_one):
      assert got.dtype == expected.dtype
      np.testing.assert_array_equal(got, expected)
  assert resident.host_arrays(relabelled)[1].tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize('placement, fraction, chosen', [
    ('auto', 0.3, 'device'), ('auto', 1e-9, 'host'), ('host', 0.3, 'host'),
    ('device', 1e-9, 'device')])
def test_placement_follows_the_config_and_the_memory_budget(digits_config, placement, fraction,
                                                            chosen):
  digits_config.data.placement = placement
  digits_config.data.device_memory_fraction = fraction
  assert resident.resolve_placement(digits_config, [sources.digits('train')]) == chosen


@pytest.mark.parametrize('steps_per_epoch, every, asked, expected', [
    (22, 0, 0, 1 if jax.default_backend() == 'cpu' else 11), (22, 0, 4, 2), (22, 4, 16, 2),
    (20, 0, 8, 5), (7, 0, 16, 7), (22, 7, 16, 1)])
def test_steps_per_call_divide_the_epoch_and_the_checkpoint_interval(
    digits_config, steps_per_epoch, every, asked, expected):
  digits_config.checkpoint_every_steps, digits_config.steps_per_call = every, asked
  assert build.steps_per_call_for(digits_config, steps_per_epoch) == expected


def test_several_steps_a_call_give_the_metrics_of_one_step_a_call(digits_config, tmp_path):
  """A lax.scan of 11 steps computes what 11 calls of one step do (to float rounding)."""
  digits_config.data.placement = 'device'
  histories = {}
  for steps_per_call in (1, 11):
    digits_config.steps_per_call = steps_per_call
    _, histories[steps_per_call] = train.train_and_evaluate(
        digits_config, str(tmp_path / str(steps_per_call)))
    assert [record['step'] for record in writers.read_steps(
        str(tmp_path / str(steps_per_call)))] == list(range(1, 45))
  for one, many in zip(histories[1], histories[11]):
    for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1'):
      np.testing.assert_allclose(many[key], one[key], rtol=1e-5, atol=1e-6)



def rotating(config):
  """`config` on the device path with augmentations that compute pixels."""
  config.data.placement = 'device'
  config.augment.rotate_degrees, config.augment.contrast = 15.0, (0.7, 1.3)
  return config


def test_batches_made_apart_train_as_batches_made_in_the_step(digits_config, tmp_path,
                                                               monkeypatch):
  """On CPU a rotating run makes its batches in a program of their own; it trains as the one
  program of batch and step does (to float rounding: the two compile the pixel arithmetic
  differently)."""
  config = rotating(digits_config)
  assert isinstance(build.build(config).device.train_call, resident.BatchThenStep)
  _, apart = train.train_and_evaluate(config, str(tmp_path / 'apart'))
  monkeypatch.setattr(device_ops, 'batch_apart', lambda config: False)
  assert isinstance(build.build(config).device.train_call, programs.Program)
  _, together = train.train_and_evaluate(config, str(tmp_path / 'together'))
  assert [record['step'] for record in writers.read_steps(str(tmp_path / 'apart'))] == list(
      range(1, 45))
  for one, other in zip(apart, together):
    for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1'):
      np.testing.assert_allclose(one[key], other[key], rtol=1e-4, atol=1e-5)


def test_a_run_making_batches_apart_resumes_exactly(digits_config, tmp_path):
  config = rotating(digits_config)
  whole_state, whole = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  config.num_epochs = 1
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.num_epochs = 2
  state, history = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
               jax.device_get(whole_state.params))
  timing = ('seconds', 'images_per_second')
  assert [{k: v for k, v in record.items() if k not in timing} for record in history] == [
      {k: v for k, v in record.items() if k not in timing} for record in whole]

def test_device_evaluation_matches_the_host_evaluator(digits_config, tmp_path):
  digits_config.data.placement = 'device'
  state, history = train.train_and_evaluate(digits_config, str(tmp_path))
  on_host = evaluation.evaluate(build.build(digits_config, 'evaluate'), state, 'test')
  for key in ('loss', 'top1', 'top5'):
    np.testing.assert_allclose(history[-1][f'test_{key}'], on_host.metrics[key], rtol=1e-6)
  assert on_host.metrics['count'] == 360


@pytest.mark.parametrize('answers, agreed', [((True, True), True), ((True, False), False)])
def test_processes_take_the_device_path_only_when_it_fits_on_every_one(monkeypatch, answers,
                                                                       agreed):
  """'auto' on several processes: one process whose devices lack the memory sends all of
  them to the host path (the others' answers are gathered, as JAX's process_allgather
  gives them)."""
  monkeypatch.setattr(jax, 'process_count', lambda: len(answers))
  monkeypatch.setattr(resident.multihost_utils, 'process_allgather',
                      lambda mine: np.asarray(answers))
  assert resident.every_process(True) is agreed


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_evaluation_does_not_depend_on_the_eval_batch_size(digits_run, digits_config, placement):
  """The 360 test digits in batches of 96 (one padded) and of 72 (none padded): the same
  scores to the last bit, as the loss is summed exactly over the examples."""
  scores = []
  for eval_batch_size in (96, 72):
    digits_config.eval_batch_size = eval_batch_size
    digits_config.data.placement = placement
    run = build.build(digits_config)
    assert (run.device is None) == (placement == 'host')
    scores.append(evaluation.evaluate(run, digits_run[1], 'test').metrics)
  assert scores[0] == scores[1] and scores[0]['count'] == 360


def test_a_run_cannot_resume_on_the_other_data_path(digits_config, tmp_path):
  """'auto' both times, but a memory budget (allowed to change) that no longer fits."""
  digits_config.num_epochs = 1
  train.train_and_evaluate(digits_config, str(tmp_path))  # auto: the device path
  digits_config.data.device_memory_fraction, digits_config.num_epochs = 1e-9, 2
  with pytest.raises(ConfigError, match='placement=device'):
    train.train_and_evaluate(digits_config, str(tmp_path))
  digits_config.data.placement = 'host'  # named outright: a changed config
  with pytest.raises(ConfigError, match=r"data\.placement 'auto' -> 'host'"):
    train.train_and_evaluate(digits_config, str(tmp_path))


@pytest.mark.parametrize('key, value', [('data.placement', 'gpu'),
                                        ('data.device_memory_fraction', 0.0),
                                        ('steps_per_call', -1)])
def test_placement_mistakes_are_one_line(digits_config, key, value, tmp_path):
  section, _, field = key.rpartition('.')
  (digits_config[section] if section else digits_config)[field] = value
  with pytest.raises(ConfigError, match=f'{field}.*{value}'):
    train.train_and_evaluate(digits_config, str(tmp_path))
