"""K models of one architecture trained as one vmapped program.

The members' TrainStates are stacked along a leading axis; `jax.vmap` of the
ordinary `train_step`/`eval_step` runs all of them on the same batch in one
compiled program, so they share `config.seed`'s data order. The members'
convolutions batch in the backend's winning formulation (`models.member_ops`):
JAX's own vmap on GPU/TPU; 'fused' on CPU (one wide convolution for the shared
input, plain per-member convolutions after it), where plain vmap's grouped
convolutions ran slower than K runs one after another (`config.members.formulation`
picks another). Members differ in their seed (initialisation and dropout) and
optionally their learning rate (a per-member factor on the final update, exact
for every optimizer here because the learning rate is the last scaling of each
optax chain). Used by seed averages and ensembles, as one program on every
backend, so an experiment's folders never depend on where it ran. The stacked
values split into per-member records here only (`record`, `member_histories`).
"""

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.models import member_ops
from tinyimagenet_jax.state import TrainState, create_train_state, run_once

FORMULATIONS = ('auto', *member_ops.FORMULATIONS)


def member_count(config: ml_collections.ConfigDict) -> int:
  """K: `members.count`, or the length of the per-member seeds or learning rates."""
  return max(config.members.count, len(config.members.seeds),
             len(config.members.learning_rates))


def member_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """Each member's initialisation and dropout seed: `members.seeds`, else seed, seed + 1, ...

  A run of one model with `members.seeds=(s,)` is member s of a vmapped run.
  """
  if config.members.seeds:
    return [int(seed) for seed in config.members.seeds]
  return [config.seed + index for index in range(member_count(config))]


def member_learning_rates(config: ml_collections.ConfigDict) -> list[float]:
  """Each member's base learning rate: `members.learning_rates`, else the optimizer's."""
  if config.members.learning_rates:
    return [float(rate) for rate in config.members.learning_rates]
  return [float(config.optimizer.learning_rate)] * member_count(config)


def validate_members(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a bad member count or learning rate, per-member lists of different
  lengths, an unknown formulation, or init_from with several members."""
  config_lib.require(config_lib.is_number(config.members.count) and config.members.count >= 1,
                     'members.count', config.members.count, 'a whole number of models >= 1')
  config_lib.require(
      all(config_lib.is_number(rate) and rate > 0 for rate in config.members.learning_rates),
      'members.learning_rates', config.members.learning_rates,
      'positive learning rates, one per member')
  given = {key: len(config.members[key]) for key in ('seeds', 'learning_rates')
           if config.members[key]}
  count = member_count(config)
  for key, length in given.items():
    if length != count:
      raise ConfigError(
          f'config.members.{key} has {length} entries but there are {count} members;'
          ' give one entry per member (or leave it empty).')
  if config.members.formulation not in FORMULATIONS:
    raise ConfigError(f'config.members.formulation={config.members.formulation!r} is not a'
                      f' valid choice; choose one of: {", ".join(FORMULATIONS)}')
  if count > 1 and config.init_from:
    raise ConfigError('config.init_from loads one model, not a stack of members; train the'
                      ' members without it, or train one model (config.members.count=1).')


class MemberScaleState(NamedTuple):
  """The member's learning rate as a factor of the config's."""

  scale: jax.Array


def scale_updates() -> optax.GradientTransformation:
  """The last chain link: multiplies the update by the member's learning-rate factor."""

  def init(params):
    del params
    return MemberScaleState(jnp.ones((), jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(init, update)


def with_member_scales(opt_state, scales: jax.Array):
  """`opt_state` (stacked) with the member-scale link's factors set to `scales`."""
  return jax.tree.map(
      lambda node: MemberScaleState(scales) if isinstance(node, MemberScaleState) else node,
      opt_state, is_leaf=lambda node: isinstance(node, MemberScaleState))


def create_member_states(
    model: nn.Module, tx: optax.GradientTransformation, seeds: list[int],
    learning_rate_scales: list[float], input_shape: tuple[int, ...], **options,
) -> TrainState:
  """K TrainStates stacked on a leading axis; `tx` must end with `scale_updates()`."""
  stacked = run_once(jax.vmap(
      lambda seed: create_train_state(model, tx, seed, input_shape, **options)),
      jnp.asarray(seeds, jnp.uint32))
  scales = jnp.asarray(learning_rate_scales, jnp.float32)
  return stacked.replace(opt_state=with_member_scales(stacked.opt_state, scales))


def member_step(step_fn: Callable, formulation: str = 'auto') -> Callable:
  """`step_fn(state, batch)` for a stacked state: every member on the same batch, with the
  members' convolutions batched as `formulation` ('auto': the backend's winner)."""
  vmapped = jax.vmap(step_fn, in_axes=(0, None))

  def stepped(state: TrainState, batch: dict):
    chosen = (member_ops.default_formulation(jax.default_backend()) if formulation == 'auto'
              else formulation)
    with member_ops.batching(chosen):
      return vmapped(state, batch)

  return stepped


def member_state(stacked: TrainState, index: int) -> TrainState:
  """Member `index` of a stacked state, as an ordinary TrainState."""
  return jax.tree.map(lambda leaf: leaf[index], stacked)


def pick(values: dict, index: int) -> dict:
  """Member `index`'s entry of every per-member list or array in `values`."""
  return {key: (value[index] if isinstance(value, (list, tuple, np.ndarray)) else value)
          for key, value in values.items()}


def combine(records: list[dict]) -> dict:
  """One history record for K members: numeric fields averaged over the finite
  members (so plots and stop rules read it like a single run), and every
  member's own record under 'members'."""
  combined = dict(records[0])
  for key, value in records[0].items():
    if isinstance(value, float):
      values = np.asarray([record[key] for record in records], np.float64)
      finite = values[np.isfinite(values)]
      combined[key] = float(finite.mean()) if finite.size else float('nan')
  combined['members'] = records
  return combined


def record(values: dict, count: int) -> dict:
  """Metrics of one model as they are; of `count` stacked members (per-member lists),
  their mean with each member's own values under 'members' (as `combine`)."""
  if count == 1:
    return values
  return combine([pick(values, index) for index in range(count)])


def member_histories(history: list[dict], count: int) -> list[list[dict]]:
  """Each member's own history from the history of a run of `count` members."""
  if count == 1:
    return [history]
  return [[record['members'][index] for record in history] for index in range(count)]
