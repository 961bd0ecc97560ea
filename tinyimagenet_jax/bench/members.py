"""K models of one architecture trained as one program, against K trained one after another.

`members`: for each of `--models` (default lenet5), 15 members on CIFAR-100
shapes (32x32x3, 100 classes, batch 64, SGD) take training steps on the same
batch, formulated as:

- separate: K jitted steps called one after another (K runs);
- vmap: one program, plain `jax.vmap` (member convolutions become grouped ones);
- map: one program, `jax.lax.map` over the members (a loop inside the program);
- fused: one program, `member_ops`' formulation (one wide convolution for the
  shared input, plain per-member convolutions after it).

Each contender runs `--warmup` steps (at least one, which compiles), then
`--batches` steps per timing, alternated `--repeats` times (medians). A step of
K LeNet-5 members takes about a quarter second on a 2-core CPU (map: over one
second), so `--batches=3 --warmup=1 --repeats=5` is enough.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import members, models, optim, steps
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.models import member_ops

MEMBERS = 15
BATCH_SIZE = 64
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 100
FORMULATIONS = ('separate', 'vmap', 'map', 'fused')


def _batch(seed: int = 0) -> dict:
  """One random batch with CIFAR-100 shapes."""
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.normal(size=(BATCH_SIZE, *IMAGE_SHAPE)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH_SIZE), jnp.int32)}


def _stacked_state(model_name: str, count: int):
  """`count` stacked members of `model_name` for plain SGD, seeds 0..count-1."""
  config = config_lib.base_config()
  config.model.name = model_name
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  tx = optim.build_optimizer(config.optimizer, steps_per_epoch=100, num_epochs=10)
  model = models.build_model(config.model, NUM_CLASSES)
  return members.create_member_states(model, optax.chain(tx, members.scale_updates()),
                                      list(range(count)), [1.0] * count, IMAGE_SHAPE)


def _mapped_step(state, batch):
  """Every member's step in turn, as a loop inside one program."""
  return jax.lax.map(lambda member: steps.train_step(member, batch), state)


def _contender(formulation: str, stacked, batch: dict) -> Callable[[int], None]:
  """`run(n)`: n training steps of all members in `formulation`, until their results are ready."""
  if formulation == 'separate':
    step = jax.jit(steps.train_step)
    states = [members.member_state(stacked, index) for index in range(MEMBERS)]

    def run(count: int) -> None:
      for _ in range(count):
        for index, state in enumerate(states):
          states[index], metrics = step(state, batch)
      jax.block_until_ready(metrics)
    return run
  step = jax.jit(_mapped_step if formulation == 'map'
                 else members.member_step(steps.train_step, formulation))
  current = [stacked]

  def run(count: int) -> None:
    for _ in range(count):
      current[0], metrics = step(current[0], batch)
    jax.block_until_ready(metrics)
  return run


def members_speed(args: common.Args) -> list[dict]:
  """Steps/s of K members in each formulation, and the ratio to K separate runs."""
  auto = member_ops.default_formulation(jax.default_backend())
  rows = []
  for model_name in args.models or ('lenet5',):
    stacked, batch = _stacked_state(model_name, MEMBERS), _batch()
    runs = {name: _contender(name, stacked, batch) for name in FORMULATIONS}
    for run in runs.values():
      run(max(args.warmup, 1))
    times = common.alternate(
        {name: lambda run=run: run(args.batches) for name, run in runs.items()}, args.repeats)
    separate = common.median(times['separate'])
    for name in FORMULATIONS:
      seconds = common.median(times[name]) / args.batches
      rows.append({'what': 'members', 'model': model_name, 'members': MEMBERS,
                   'batch_size': BATCH_SIZE, 'formulation': name, 'auto': name == auto,
                   'steps_per_second': round(1 / seconds, 2),
                   'member_images_per_second': round(MEMBERS * BATCH_SIZE / seconds, 1),
                   'ratio_to_separate': round(separate / args.batches / seconds, 2)})
  return rows
