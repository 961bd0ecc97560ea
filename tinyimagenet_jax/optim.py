"""Optimizers, schedules and regularisation from the config, by name.

Durations in the config are in epochs; `build_optimizer` resolves them to
steps. The optimizer is the last link of an optax chain:

    [L2 on kernels] -> [clip by value] -> [clip by global norm]
        -> [coupled weight decay] -> optimizer -> [freeze schedule]

The L2 term is the gradient of `l2 * sum(kernel**2)` (Keras' kernel_regularizer
convention) added before clipping, exactly as if it were in the loss.
`weight_decay` follows PyTorch: added to the clipped gradient inside the
optimizer step (coupled), except for AdamW, whose decay is decoupled. Every
optimizer is wrapped in `optax.inject_hyperparams`, so the learning rate and
momentum used at each step live in the optimizer state and are logged.
The freeze schedule (`optimizer.freeze`, layer-wise fine-tuning) comes last, so
a frozen parameter's update is exactly zero whatever the links before it do.
Adding an optimizer or a schedule is one function and one line in its registry.
`validate_optimizer` and `validate_regularisation` check the config's optimizer
section before anything compiles (`validation.validate` runs them).
"""

from collections.abc import Callable
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.errors import ConfigError

ScheduleBuilder = Callable[[ml_collections.ConfigDict, int, int], optax.Schedule]


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """A duration in (possibly fractional) epochs, as a whole number of steps."""
  return max(1, round(epochs * steps_per_epoch))


def constant_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                      total_steps: int) -> optax.Schedule:
  """The learning rate, unchanged."""
  del steps_per_epoch, total_steps
  return optax.constant_schedule(opt.learning_rate)


def _decay(opt: ml_collections.ConfigDict, steps_per_epoch: int,
           staircase: bool) -> optax.Schedule:
  """Times `decay_rate` per `decay_every_epochs`: in jumps, or smoothly every step."""
  return optax.exponential_decay(
      opt.learning_rate,
      transition_steps=epochs_to_steps(opt.decay_every_epochs, steps_per_epoch),
      decay_rate=opt.decay_rate, staircase=staircase)


def step_decay_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                        total_steps: int) -> optax.Schedule:
  """Multiplies the rate by `decay_rate` every `decay_every_epochs` epochs."""
  del total_steps
  return _decay(opt, steps_per_epoch, staircase=True)


def exponential_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                         total_steps: int) -> optax.Schedule:
  """Smooth decay: times `decay_rate` per `decay_every_epochs`, every step."""
  del total_steps
  return _decay(opt, steps_per_epoch, staircase=False)


def cosine_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_epochs`, then cosine to `final_learning_rate`."""
  warmup = round(opt.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
      0.0, opt.learning_rate, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=opt.final_learning_rate)


def onecycle_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                      total_steps: int) -> optax.Schedule:
  """OneCycle (Smith & Topin): cosine up from lr/div_factor to lr, then far down.

  As PyTorch's OneCycleLR: the peak `learning_rate` is reached after
  `onecycle_pct_start` of the run; the end is the start / final_div_factor.
  """
  del steps_per_epoch
  return optax.cosine_onecycle_schedule(
      total_steps, opt.learning_rate, pct_start=opt.onecycle_pct_start,
      div_factor=opt.onecycle_div_factor, final_div_factor=opt.onecycle_final_div_factor)


SCHEDULES: dict[str, ScheduleBuilder] = {
    'constant': constant_schedule,
    'step': step_decay_schedule,
    'exponential': exponential_schedule,
    'cosine': cosine_schedule,
    'onecycle': onecycle_schedule,
}


def cosine_between(start: float, end: float, steps: int) -> optax.Schedule:
  """Half a cosine from `start` to `end` over `steps`, then `end`."""
  def schedule(count):
    progress = jnp.clip(count / max(steps, 1), 0.0, 1.0)
    return end + (start - end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
  return schedule


def onecycle_momentum(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Momentum cycled inversely to the OneCycle rate: high -> low -> high."""
  low, high = opt.cycle_momentum
  rise = round(opt.onecycle_pct_start * total_steps)
  return optax.join_schedules(
      [cosine_between(high, low, rise), cosine_between(low, high, total_steps - rise)], [rise])


def momentum_schedule(opt: ml_collections.ConfigDict, total_steps: int):
  """The momentum (or Adam's beta1) per step: cycled for OneCycle, else constant."""
  if opt.schedule == 'onecycle' and opt.cycle_momentum:
    return onecycle_momentum(opt, total_steps)
  return None


class ProximalAdagradState(NamedTuple):
  accumulator: optax.Updates


def proximal_adagrad(learning_rate: float, l1: float = 0.0, l2: float = 0.0,
                     initial_accumulator_value: float = 0.1) -> optax.GradientTransformation:
  """TensorFlow's ProximalAdagrad (FOBOS with Adagrad step sizes); optax has none.

  accum += g^2; v = w - lr * g / sqrt(accum);
  w' = sign(v) * max(|v| - lr * l1, 0) / (1 + lr * l2); the update is w' - w.
  """
  def init(params):
    return ProximalAdagradState(
        jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

  def update(grads, state, params):
    accumulator = jax.tree.map(lambda a, g: a + g * g, state.accumulator, grads)

    def step(param, grad, accum):
      proposal = param - learning_rate * grad / jnp.sqrt(accum)
      shrunk = jnp.sign(proposal) * jnp.maximum(jnp.abs(proposal) - learning_rate * l1, 0)
      return shrunk / (1 + learning_rate * l2) - param

    return jax.tree.map(step, params, grads, accumulator), ProximalAdagradState(accumulator)

  return optax.GradientTransformation(init, update)


Optimizer = Callable[[ml_collections.ConfigDict, optax.Schedule, optax.Schedule | None],
                     optax.GradientTransformation]


def sgd(opt, lr, momentum) -> optax.GradientTransformation:
  """SGD; heavy-ball or Nesterov momentum when `momentum` > 0 (or cycled)."""
  momentum = momentum if momentum is not None else (opt.momentum or None)
  return optax.inject_hyperparams(optax.sgd, static_args=('nesterov',))(
      learning_rate=lr, momentum=momentum, nesterov=opt.nesterov)


def adam(opt, lr, momentum) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015); beta1 plays the momentum's part in OneCycle."""
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=lr, b1=momentum if momentum is not None else opt.b1, b2=opt.b2, eps=opt.eps)


def adamw(opt, lr, momentum) -> optax.GradientTransformation:
  """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay."""
  return optax.inject_hyperparams(optax.adamw)(
      learning_rate=lr, b1=momentum if momentum is not None else opt.b1, b2=opt.b2,
      eps=opt.eps, weight_decay=opt.weight_decay)


def adadelta(opt, lr, momentum) -> optax.GradientTransformation:
  """AdaDelta (Zeiler 2012), with TensorFlow's learning-rate factor."""
  del momentum
  return optax.inject_hyperparams(optax.adadelta)(learning_rate=lr, rho=opt.rho, eps=opt.eps)


def adagrad(opt, lr, momentum) -> optax.GradientTransformation:
  """Adagrad (Duchi et al. 2011)."""
  del momentum
  return optax.inject_hyperparams(optax.adagrad)(
      learning_rate=lr, initial_accumulator_value=opt.initial_accumulator_value, eps=opt.eps)


def rmsprop(opt, lr, momentum) -> optax.GradientTransformation:
  """RMSProp (Hinton 2012), optionally with momentum."""
  momentum = momentum if momentum is not None else (opt.momentum or None)
  return optax.inject_hyperparams(optax.rmsprop)(
      learning_rate=lr, decay=opt.rmsprop_decay, eps=opt.eps, momentum=momentum)


def proximal_adagrad_optimizer(opt, lr, momentum) -> optax.GradientTransformation:
  """ProximalAdaGrad with the config's l1/l2 strengths (the second report's comparison)."""
  del momentum
  return optax.inject_hyperparams(proximal_adagrad)(
      learning_rate=lr, l1=opt.proximal_l1, l2=opt.proximal_l2,
      initial_accumulator_value=opt.initial_accumulator_value)


OPTIMIZERS: dict[str, Optimizer] = {
    'sgd': sgd,
    'adam': adam,
    'adamw': adamw,
    'adadelta': adadelta,
    'adagrad': adagrad,
    'rmsprop': rmsprop,
    'proximal_adagrad': proximal_adagrad_optimizer,
}


def kernel_mask(params) -> dict:
  """True for convolution and dense kernels; False for biases and norm scales."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def regularisation(opt: ml_collections.ConfigDict) -> list[optax.GradientTransformation]:
  """The chain links before the optimizer: L2 on kernels, clipping, weight decay."""
  links = []
  if opt.l2:
    links.append(optax.add_decayed_weights(2 * opt.l2, mask=kernel_mask))
  if opt.clip_value:
    links.append(optax.clip(opt.clip_value))
  if opt.clip_global_norm:
    links.append(optax.clip_by_global_norm(opt.clip_global_norm))
  if opt.weight_decay and opt.name != 'adamw':
    links.append(optax.add_decayed_weights(opt.weight_decay))
  return links


def _freeze_entry(entry) -> tuple[str, float]:
  """An optimizer.freeze entry 'prefix@epoch' as (prefix, epoch or math.inf), or ConfigError."""
  prefix, at, epoch = entry.partition('@') if isinstance(entry, str) else ('', '', '')
  if not (prefix and at and (epoch == 'inf' or (epoch.isascii() and epoch.isdigit()))):
    raise ConfigError(
        f"config.optimizer.freeze entry {entry!r} must be '<param path prefix>@<epoch>'"
        " with a whole number of epochs or inf, e.g. 'block5@3' or 'block1@inf'.")
  return prefix, math.inf if epoch == 'inf' else int(epoch)


def parse_freeze(entries) -> list[tuple[str, float]]:
  """The (prefix, epoch) pairs of config.optimizer.freeze, checked before anything compiles."""
  return [_freeze_entry(entry) for entry in entries]


class FreezeState(NamedTuple):
  count: jax.Array  # updates applied so far: the step the next update is for


def path_name(path) -> str:
  """A parameter's tree path joined with '/' ('block5_conv1/kernel'), as freeze prefixes see it."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def frozen_until(name: str, entries: list[tuple[str, float]], steps_per_epoch: int) -> float:
  """The step from which parameter `name` trains: the latest of its matching entries, else 0."""
  return max((epoch * steps_per_epoch for prefix, epoch in entries if name.startswith(prefix)),
             default=0)


def check_prefixes(entries, parsed: list[tuple[str, float]], params) -> None:
  """ConfigError naming the first freeze entry whose prefix matches no parameter (a typo)."""
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  names = [path_name(path) for path in paths]
  for entry, (prefix, _) in zip(entries, parsed):
    if not any(name.startswith(prefix) for name in names):
      tops = sorted({path_name(path[:1]) for path in paths})
      more = f' and {len(tops) - 6} more' if len(tops) > 6 else ''
      raise ConfigError(
          f'config.optimizer.freeze entry {entry!r} matches no parameter; parameter paths'
          f" start with one of: {', '.join(tops[:6])}{more}.")


def masked_update(update: jax.Array, until: float, count: jax.Array) -> jax.Array:
  """`update`, or -0.0 while count < until: p + -0.0 == p bitwise for every p, even -0.0."""
  return update if until == 0 else jnp.where(count < until, -0.0, update)


def freeze_schedule(entries, steps_per_epoch: int) -> optax.GradientTransformation:
  """Zero updates under each 'prefix@epoch' entry until that epoch: layer-wise fine-tuning."""
  parsed = parse_freeze(entries)

  def init(params):
    check_prefixes(entries, parsed, params)
    return FreezeState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    masked = jax.tree_util.tree_map_with_path(
        lambda path, leaf: masked_update(
            leaf, frozen_until(path_name(path), parsed, steps_per_epoch), state.count),
        updates)
    return masked, FreezeState(optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init, update)


def build_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                   num_epochs: int) -> optax.Schedule:
  """The learning-rate schedule named by `opt.schedule`, in steps."""
  return SCHEDULES[opt.schedule](opt, steps_per_epoch, steps_per_epoch * num_epochs)


def build_optimizer(opt: ml_collections.ConfigDict, steps_per_epoch: int,
                    num_epochs: int) -> optax.GradientTransformation:
  """The optimizer named by `opt.name` behind its regularisation links, then any freeze."""
  total_steps = steps_per_epoch * num_epochs
  core = OPTIMIZERS[opt.name](opt, build_schedule(opt, steps_per_epoch, num_epochs),
                              momentum_schedule(opt, total_steps))
  freeze = [freeze_schedule(opt.freeze, steps_per_epoch)] if opt.freeze else []
  return optax.chain(*regularisation(opt), core, *freeze)


def validate_optimizer(opt: ml_collections.ConfigDict) -> None:
  """ConfigError unless the optimizer and schedule are registered and the learning rate is > 0."""
  config_lib.one_of('optimizer.name', opt.name, OPTIMIZERS)
  config_lib.one_of('optimizer.schedule', opt.schedule, SCHEDULES)
  config_lib.positive('optimizer.learning_rate', opt.learning_rate)


def validate_regularisation(opt: ml_collections.ConfigDict) -> None:
  """ConfigError for a negative regularisation, clipping or warmup, or a malformed freeze entry."""
  for key in ('l2', 'weight_decay', 'clip_global_norm', 'clip_value', 'warmup_epochs'):
    if opt[key] < 0:
      raise ConfigError(f'config.optimizer.{key}={opt[key]!r} must be >= 0'
                        ' (0 turns it off).')
  parse_freeze(opt.freeze)


LOGGED_HYPERPARAMS = {'learning_rate': 'learning_rate', 'momentum': 'momentum', 'b1': 'momentum'}


def current_hyperparams(opt_state) -> dict:
  """The learning rate and momentum (Adam's beta1) of the latest update, if injected."""
  injected = [leaf for leaf in jax.tree.leaves(
      opt_state, is_leaf=lambda node: hasattr(node, 'hyperparams')) if hasattr(leaf, 'hyperparams')]
  if not injected:
    return {}
  return {LOGGED_HYPERPARAMS[key]: value for key, value in injected[-1].hyperparams.items()
          if key in LOGGED_HYPERPARAMS and value is not None}
