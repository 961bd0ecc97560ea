"""The training state: one pytree holding everything a step reads and writes."""

from collections.abc import Callable
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinyimagenet_jax import programs

# Compiler options for a program that runs once per run (the initial state), by backend. On
# XLA:CPU, LLVM's optimisation of the initialisers' random-number code was nearly all of
# their compile time: 18 small normal() draws compiled in 8.2 s with them and 1.9 s without
# (WORKSPACE.md, "Compile time, smoke modes and the suite"); running that code unoptimised
# costs far less than that. XLA:CPU's older fusion emitters took another 35-50% off
# (conv3's initial states: 0.30-0.43 s instead of 0.60-0.73 s; "Quick compiles").
RUN_ONCE_COMPILER_OPTIONS = {'cpu': {'xla_backend_optimization_level': 0,
                                     'xla_cpu_use_fusion_emitters': False}}


def run_once(fn: Callable, *args, out_shardings=None, name: str = 'run_once',
             context: str | None = None, known_outputs: Any = None):
  """`jax.jit(fn, out_shardings=...)(*args)` for a program that runs once: compiled with the
  backend's RUN_ONCE_COMPILER_OPTIONS, and kept as `name` in a run's `context` when given
  (`programs.Program`, with `known_outputs`). Called inside another trace (a jit or a
  vmap), it is part of that program and compiled with it."""
  jitted = jax.jit(fn, out_shardings=out_shardings)
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
    return jitted(*args)
  options = RUN_ONCE_COMPILER_OPTIONS.get(jax.default_backend())
  return programs.Program(jitted, name, context, compiler_options=options,
                          known_outputs=known_outputs)(*args)


@flax.struct.dataclass
class TrainState:
  """step, params, batch_stats, opt_state and the run's base PRNG key.

  `apply_fn`, `tx` and the loss options are static (not leaves): they are part
  of the tree structure, so jit and checkpoints see only arrays. `rng` is raw
  key data (uint32) so that every checkpoint format stores it.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable[..., Any] = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  label_smoothing: float = flax.struct.field(pytree_node=False, default=0.0)
  compute_dtype: str = flax.struct.field(pytree_node=False, default='float32')


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, input_shape: tuple[int, ...],
    label_smoothing: float = 0.0, compute_dtype: str = 'float32',
) -> TrainState:
  """Initialises parameters for inputs of `input_shape` (one example, HWC)."""
  init_key, run_key = jax.random.split(jax.random.key(seed))
  # One compiled program, not one per initialiser (dozens of compiles for a deep model).
  variables = run_once(functools.partial(model.init, train=False),
                       init_key, jnp.zeros((1, *input_shape), jnp.float32))
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      rng=jax.random.key_data(run_key),
      apply_fn=model.apply,
      tx=tx,
      label_smoothing=label_smoothing,
      compute_dtype=compute_dtype,
  )


def step_of(state: TrainState) -> int:
  """The step count of a state, or of stacked members (all at the same step)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
