"""K members as one vmapped program: the same per-member results as K separate runs."""

import numpy as np
import pytest

from tinyimagenet_jax import members, snapshots, train, writers
from tinyimagenet_jax.errors import ConfigError

RESULT_KEYS = ('train_loss', 'train_accuracy', 'test_loss', 'test_top1', 'test_top5')


@pytest.fixture
def short_config(digits_config):
  digits_config.steps_per_epoch = 6
  digits_config.num_epochs = 2
  digits_config.write_plots = False
  return digits_config


def test_vmapped_members_match_separate_runs(short_config, tmp_path):
  short_config.members.seeds = (3, 7)
  short_config.members.learning_rates = (0.02, 0.08)
  stacked, history = train.train_and_evaluate(short_config, str(tmp_path / 'vmapped'))
  assert members.member_count(short_config) == 2
  for index, (seed, rate) in enumerate(zip((3, 7), (0.02, 0.08))):
    single = short_config.copy_and_resolve_references()
    single.members.seeds, single.members.learning_rates = (seed,), ()
    single.optimizer.learning_rate = rate
    state, alone = train.train_and_evaluate(single, str(tmp_path / f'alone{index}'))
    own = members.member_history(history, index)
    for record, reference in zip(own, alone):
      for key in RESULT_KEYS:
        np.testing.assert_allclose(record[key], reference[key], rtol=2e-5, atol=2e-6)
    member = members.member_state(stacked, index)
    for got, want in zip(*map(lambda s: __import__('jax').tree.leaves(s.params), (member, state))):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      history[-1]['test_top1'], np.mean([m['test_top1'] for m in history[-1]['members']]))
  rows = (tmp_path / 'vmapped' / writers.MEMBERS_CSV).read_text().splitlines()
  assert rows[0].startswith('member,epoch,') and len(rows) == 1 + 2 * 2


def test_member_target_waits_for_every_member():
  def record(*errors):
    return {'train_error': float(np.mean(errors)),
            'members': [{'train_error': error} for error in errors]}
  assert not train.reached_target([record(0.2, 0.3)], 0.25)
  assert train.reached_target([record(0.2, 0.3), record(0.3, 0.24)], 0.25)
  assert train.reached_target([{'train_error': 0.25}], 0.25)
  assert not train.reached_target([{'train_error': 0.26}], 0.25)


def _losses(train_losses, val_losses):
  return [{'train_loss': t, 'val_loss': v, 'val_top1': -v}
          for t, v in zip(train_losses, val_losses)]


@pytest.mark.parametrize('train_losses, val_losses, stops', [
    ((5, 4, 3, 2), (1.0, 1.1, 1.2, 1.3), True),  # three rises while training loss fell
    ((5, 4, 3, 2), (1.0, 1.1, 1.2, 1.15), False),  # the last epoch fell back
    ((5, 4, 4, 2), (1.0, 1.1, 1.2, 1.3), False),  # training loss did not fall every epoch
    ((5, 4, 3), (1.0, 1.1, 1.2), False),  # only two rises so far
])
def test_rising_rule(base_stop, train_losses, val_losses, stops):
  base_stop.rule = 'rising'
  assert train.stopped_early(_losses(train_losses, val_losses), base_stop) is stops


@pytest.mark.parametrize('val_losses, patience, mode, metric, stops', [
    ((1.0, 0.9, 0.95, 0.96), 2, 'min', 'val_loss', True),
    ((1.0, 0.9, 0.95, 0.89), 2, 'min', 'val_loss', False),
    ((1.0, 0.9, 0.95), 2, 'min', 'val_loss', False),
    ((1.0, 0.9, 0.95, 0.96), 2, 'max', 'val_top1', True),  # val_top1 = -val_loss
])
def test_patience_rule(base_stop, val_losses, patience, mode, metric, stops):
  base_stop.rule, base_stop.patience, base_stop.mode, base_stop.metric = (
      'patience', patience, mode, metric)
  assert train.stopped_early(_losses([1] * len(val_losses), val_losses), base_stop) is stops


@pytest.fixture
def base_stop(digits_config):
  return digits_config.early_stopping


def test_snapshots_keep_the_chosen_epochs(short_config, tmp_path):
  short_config.num_epochs = 3
  short_config.snapshot_epochs = (2,)
  short_config.early_stopping.rule = 'patience'
  short_config.early_stopping.metric = 'test_loss'
  state, history = train.train_and_evaluate(short_config, str(tmp_path))
  assert sorted(p.name for p in (tmp_path / 'snapshots').iterdir()) == ['epoch_002.npz']
  saved = snapshots.load_snapshot(str(tmp_path), 2)
  assert set(saved['params']) == set(state.params)
  with pytest.raises(Exception, match='no snapshot of epoch 3'):
    snapshots.load_snapshot(str(tmp_path), 3)


@pytest.mark.parametrize('key, value, message', [
    ('seeds', (1, 2, 3), 'learning_rates has 2 entries but there are 3 members'),
    ('vmap', 'sometimes', 'not a valid choice'),
])
def test_member_mistakes_are_one_line(short_config, key, value, message):
  short_config.members.learning_rates = (0.1, 0.2)
  short_config.members[key] = value
  with pytest.raises(ConfigError, match=message):
    members.validate_members(short_config)
