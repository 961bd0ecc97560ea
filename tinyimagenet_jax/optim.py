"""Optimizers and learning-rate schedules from the config, by name.

Durations in the config are in epochs; `build_optimizer` resolves them to
steps with the run's steps per epoch. Adding an optimizer or a schedule is one
function and one line in its registry.
"""

from collections.abc import Callable

import ml_collections
import optax

from tinyimagenet_jax.config import epochs_to_steps

Schedule = Callable[[ml_collections.ConfigDict, int], optax.Schedule]


def constant_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate, unchanged."""
  del steps_per_epoch
  return optax.constant_schedule(opt.learning_rate)


def step_decay_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Multiplies the rate by `decay_rate` every `decay_every_epochs` epochs."""
  return optax.exponential_decay(
      opt.learning_rate,
      transition_steps=epochs_to_steps(opt.decay_every_epochs, steps_per_epoch),
      decay_rate=opt.decay_rate,
      staircase=True)


SCHEDULES: dict[str, Schedule] = {
    'constant': constant_schedule,
    'step': step_decay_schedule,
}


def sgd(opt: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  """SGD; heavy-ball or Nesterov momentum when `momentum` > 0."""
  return optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)


def adam(opt: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015) with the config's betas and epsilon."""
  return optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)


OPTIMIZERS: dict[str, Callable[[ml_collections.ConfigDict, optax.Schedule], optax.GradientTransformation]] = {
    'sgd': sgd,
    'adam': adam,
}


def build_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning-rate schedule named by `opt.schedule`, in steps."""
  return SCHEDULES[opt.schedule](opt, steps_per_epoch)


def build_optimizer(opt: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimizer named by `opt.name`, driven by its schedule."""
  return OPTIMIZERS[opt.name](opt, build_schedule(opt, steps_per_epoch))
