"""K members as one vmapped program: the same per-member results as K separate runs."""

import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyimagenet_jax import members, snapshots, steps, train, writers
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common
from tinyimagenet_jax.models import lenet, member_ops
from tinyimagenet_jax.models.conv import NHWC

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
    own = members.member_histories(history, 2)[index]
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
    ('formulation', 'sometimes', 'not a valid choice'),
])
def test_member_mistakes_are_one_line(short_config, key, value, message):
  short_config.members.learning_rates = (0.1, 0.2)
  short_config.members[key] = value
  with pytest.raises(ConfigError, match=message):
    members.validate_members(short_config)


@pytest.fixture(scope='module')
def lenet_members():
  """A stacked LeNet-5 state of 3 members (16x16x3 inputs, 10 classes) and two batches."""
  tx = optax.chain(optax.sgd(0.1), members.scale_updates())
  state = members.create_member_states(lenet.LeNet5(num_classes=10), tx, [0, 1, 2],
                                       [1.0, 0.5, 2.0], (16, 16, 3))
  rng = np.random.default_rng(0)
  batches = [{'image': jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32),
              'label': jnp.asarray(rng.integers(0, 10, 8), jnp.int32)} for _ in range(2)]
  return state, batches


@pytest.mark.parametrize('formulation', member_ops.FORMULATIONS)
def test_member_formulations_match_separate_steps(lenet_members, formulation):
  stacked, batches = lenet_members
  separate = [members.member_state(stacked, index) for index in range(3)]
  member_train = jax.jit(members.member_step(steps.train_step, formulation))
  single_train = jax.jit(steps.train_step)
  for batch in batches:
    stacked, metrics = member_train(stacked, batch)
    for index in range(3):
      separate[index], alone = single_train(separate[index], batch)
      np.testing.assert_allclose(metrics['loss'][index], alone['loss'], rtol=2e-5)
      np.testing.assert_allclose(metrics['grad_norm'][index], alone['grad_norm'], rtol=2e-5)
  for index in range(3):
    got = jax.tree.leaves(members.member_state(stacked, index).params)
    for leaf, want in zip(got, jax.tree.leaves(separate[index].params)):
      np.testing.assert_allclose(leaf, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('formulation, grouped', [('vmap', True), ('fused', False)])
def test_fused_members_have_no_grouped_convolutions(lenet_members, formulation, grouped):
  stacked, batches = lenet_members
  program = jax.jit(members.member_step(steps.train_step, formulation)).lower(
      stacked, batches[0]).as_text()
  assert ('feature_group_count = 3' in program) is grouped


def _conv_loss(conv):
  """A two-layer loss of (first kernel, second kernel, images): VALID then strided SAME."""
  def loss(kernel, second, images):
    hidden = jnp.tanh(conv(images, kernel, (1, 1), 'VALID', dimension_numbers=NHWC))
    out = conv(hidden, second, (2, 2), 'SAME', dimension_numbers=NHWC)
    return jnp.sum(out ** 2)
  return loss


@pytest.mark.parametrize('formulation', member_ops.FORMULATIONS)
def test_member_conv_values_and_gradients_match_lax(formulation):
  keys = jax.random.split(jax.random.key(0), 4)
  images = jax.random.normal(keys[0], (2, 9, 9, 3))
  kernels = jax.random.normal(keys[1], (4, 3, 3, 3, 5))
  seconds = jax.random.normal(keys[2], (4, 3, 3, 5, 2))
  grads = lambda conv: jax.value_and_grad(_conv_loss(conv), argnums=(0, 1, 2))
  want = jax.jit(jax.vmap(grads(lax.conv_general_dilated), in_axes=(0, 0, None)))(
      kernels, seconds, images)
  with member_ops.batching(formulation):
    got = jax.jit(jax.vmap(grads(member_ops.conv_general_dilated), in_axes=(0, 0, None)))(
        kernels, seconds, images)
  for leaf, reference in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(leaf, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
  per_member_images = jax.random.normal(keys[3], (4, 2, 9, 9, 3))  # one kernel, images per member
  shared_kernel = jax.vmap(grads(member_ops.conv_general_dilated), in_axes=(None, None, 0))
  with member_ops.batching(formulation):
    got = jax.jit(shared_kernel)(kernels[0], seconds[0], per_member_images)
  want = jax.jit(jax.vmap(grads(lax.conv_general_dilated), in_axes=(None, None, 0)))(
      kernels[0], seconds[0], per_member_images)
  for leaf, reference in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(leaf, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_member_conv_outside_vmap_is_lax_and_passes_other_kinds_through():
  keys = jax.random.split(jax.random.key(1), 3)
  images = jax.random.normal(keys[0], (2, 9, 9, 3))
  kernel = jax.random.normal(keys[1], (3, 3, 3, 6))
  second = jax.random.normal(keys[2], (3, 3, 6, 2))
  grads = lambda conv: jax.value_and_grad(_conv_loss(conv), argnums=(0, 1, 2))(
      kernel, second, images)
  for leaf, reference in zip(jax.tree.leaves(grads(member_ops.conv_general_dilated)),
                             jax.tree.leaves(grads(lax.conv_general_dilated))):
    np.testing.assert_allclose(leaf, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())
  grouped = [conv(images[..., :2], kernel[:, :, :1], (1, 1), 'SAME', feature_group_count=2,
                  dimension_numbers=NHWC)
             for conv in (member_ops.conv_general_dilated, lax.conv_general_dilated)]
  np.testing.assert_array_equal(*grouped)


def tree_listing(root) -> set[str]:
  """Every path under `root` down to a checkpoint's items (below them Orbax names files by
  content hashes), with TensorBoard's host- and time-stamped file names reduced to their kind."""
  return {re.sub(r'events\.out\.tfevents\..*', 'events', str(path.relative_to(root)))
          for path in root.rglob('*') if len(path.relative_to(root).parts) <= 4}


def test_member_folders_are_the_same_whatever_the_formulation(short_config, tmp_path):
  """An experiment's members write one run folder, with the same files, however their
  convolutions batch (the backend's choice), so a study resumes on another backend."""
  histories = {}
  for formulation in member_ops.FORMULATIONS:
    short_config.members.formulation = formulation
    histories[formulation] = common.train_members(
        'seeds', short_config, str(tmp_path / formulation), seeds=(0, 1))
  listings = [tree_listing(tmp_path / formulation) for formulation in member_ops.FORMULATIONS]
  assert listings[0] == listings[1] and 'seeds/metrics.jsonl' in listings[0]
  assert not any(name.startswith('seeds_') for name in listings[0])
  for vmapped, fused in zip(*histories.values()):
    for got, want in zip(vmapped, fused):
      for key in RESULT_KEYS:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6)
