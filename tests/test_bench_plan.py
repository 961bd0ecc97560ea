"""The planning benchmark: resident bytes, the auto placement, flop counts, a report's plan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyimagenet_jax import build, steps
from tinyimagenet_jax.bench import common, plan
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import resident, sources
from tinyimagenet_jax.experiments import common as experiments_common

CIFAR10_BYTES = 60_000 * (32 * 32 * 3 + 4)


def test_cifar10_takes_its_images_and_labels_in_bytes():
  data = plan.data_config(name='cifar10')
  sizes = plan.dataset_splits(data)
  assert sizes == {'train': 50_000, 'test': 10_000}
  assert sum(plan.split_bytes(size, (32, 32, 3)) for size in sizes.values()) == CIFAR10_BYTES
  row = plan.memory_row('CIFAR-10', data, ('train', 'test'), '')
  assert row['resident_MiB'] == round(CIFAR10_BYTES / 2**20, 1)


def test_split_bytes_is_the_device_paths_own():
  images = np.zeros((7, 5, 4, 3), np.uint8)
  real = sources.ArraySource(images, np.zeros(7, np.int32), ())
  assert plan.split_bytes(7, (5, 4, 3)) == resident.split_bytes(real) == 7 * (5 * 4 * 3 + 4)


def test_auto_placement_follows_the_budget():
  budget = 0.3 * plan.DEVICE_MEMORY['tpu_v2_8']
  assert plan.auto_placement(int(budget), plan.DEVICE_MEMORY['tpu_v2_8'], 0.3) == 'device'
  assert plan.auto_placement(int(budget) + 1, plan.DEVICE_MEMORY['tpu_v2_8'], 0.3) == 'host'
  row = plan.memory_row('CIFAR-10', plan.data_config(name='cifar10'), ('train', 'test'), '')
  share = CIFAR10_BYTES / budget
  assert row['auto_tpu_v2_8'] == f'device ({share:.0%})'
  # 1% of a TPU v2 core (82 MiB) cannot hold CIFAR-10's 176 MiB.
  small = plan.data_config(name='cifar10', device_memory_fraction=0.01)
  assert plan.memory_row('CIFAR-10', small, ('train', 'test'), '')['auto_tpu_v2_8'].startswith(
      'host')


@pytest.mark.parametrize('margin, expected', [(1.01, 'device'), (0.99, 'host')])
def test_auto_placement_agrees_with_resolve_placement(margin, expected):
  needed = plan.split_bytes(1000, (32, 32, 3))
  memory = resident.device_memory(jax.devices()[0])
  config = base_config()
  config.data.device_memory_fraction = margin * needed / memory
  stand_in = sources.ArraySource(np.broadcast_to(np.uint8(0), (1000, 32, 32, 3)),
                                 np.zeros(1000, np.int32), ())
  assert resident.resolve_placement(config, [stand_in]) == expected
  assert plan.auto_placement(needed, memory, config.data.device_memory_fraction) == expected


def test_xla_counts_a_dot_as_two_flops_per_multiply_add():
  lhs = jax.ShapeDtypeStruct((4, 64), jnp.float32)
  rhs = jax.ShapeDtypeStruct((64, 10), jnp.float32)
  assert jax.jit(jnp.dot).lower(lhs, rhs).cost_analysis()['flops'] == 2 * 4 * 64 * 10


def test_xla_counts_a_valid_convolution_as_two_flops_per_multiply_add():
  images = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 3, 5), jnp.float32)
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert jax.jit(conv).lower(images, kernel).cost_analysis()['flops'] == 2 * (2 * 4 * 4 * 5) * 27


def test_linear_model_flops_are_the_hand_count():
  batch, pixels, classes = 4, 8 * 8 * 1, 10
  config = base_config()
  config.model.name = 'linear'
  state = plan.abstract_state(config, classes, (8, 8, 1), steps_per_epoch=10)
  dot = 2 * batch * pixels * classes
  forward = plan.lowered_flops(lambda s, b: steps.predict(s, b['image']), state,
                               plan.abstract_batch(batch, (8, 8, 1)))
  assert forward == dot + batch * classes  # the dot, then the bias add
  train = plan.lowered_flops(steps.train_step, state, plan.abstract_batch(batch, (8, 8, 1)))
  assert train >= 2 * dot  # the forward dot and the kernel's gradient (no input gradient)
  evaluation = plan.lowered_flops(steps.eval_step, state,
                                  plan.abstract_batch(batch, (8, 8, 1), masked=True))
  assert forward < evaluation < train


def smoke_runs():
  """The first report's sweep, smoke-sized (digits, narrow conv4, 10 steps x 3 epochs)."""
  return plan.runs_of(build.load_config('relu_vs_tanh:smoke'))


def test_a_reports_plan_runs_end_to_end():
  runs = smoke_runs()
  rows = plan.report_rows('1', runs)
  assert [row['run'] for row in rows] == [*runs, 'total']
  first, total = rows[0], rows[-1]
  assert first['K'] == 1 and first['input'] == '8x8x1' and first['splits'] == '1,437/360'
  assert first['steps_per_epoch'] == 10 and first['epochs'] == 3
  assert first['images_M'] == 3 * 10 * 32 / 1e6
  assert first['GFLOP_per_step'] > 0 and first['eval_GFLOP_per_epoch'] > 0
  assert first['note'] == 'cap: stops at train error <= 0.8'
  for key in plan.SUMMED:
    assert total[key] == pytest.approx(sum(row[key] for row in rows[:-1]), rel=1e-2)
  assert total['a100_h'] == pytest.approx(
      plan.hours(total['PFLOP'] * 1e15, 'a100', 'float32'), rel=1e-2)


def test_members_count_k_times_one_model():
  config = next(iter(smoke_runs().values()))
  one = plan.run_row('x', 'one', config)
  three = plan.run_row('x', 'three', experiments_common.variant(config, **{'members.count': 3}))
  assert three['K'] == 3 and three['GFLOP_per_step'] == pytest.approx(3 * one['GFLOP_per_step'])
  assert three['images_M'] == one['images_M']  # the members share every batch


def test_plan_prints_the_memory_table_and_returns_a_configs_runs(capsys):
  rows = plan.plan(common.Args(config=build.load_config('relu_vs_tanh:smoke')))
  printed = capsys.readouterr().out
  assert "| CIFAR-10 | train 50,000 + test 10,000 | 32x32x3 | 176.0 |" in printed
  assert 'stored resized (256x256 uint8)' in printed
  assert rows[-1]['run'] == 'total' and rows[0]['report'] == 'relu_vs_tanh'
