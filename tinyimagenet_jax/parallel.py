"""Data parallelism: a 1-D `data` mesh, shardings, batches onto devices.

State is replicated, batches are split along their first axis over every
device, and `jax.jit` with these shardings does the rest (XLA inserts the
gradient all-reduce). One CPU, simulated CPU devices, a GPU or a TPU slice all
run the same program.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tinyimagenet_jax import programs
from tinyimagenet_jax import steps

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named `data` over `devices` (default: all of them)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (the train state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Rows split evenly over the `data` axis (batches)."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
  """Copies every array of `tree` to every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """A host batch (this process's rows) as global arrays split over `data`."""
  sharding = batch_sharded(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in batch.items()}


def jit_train_step(mesh: Mesh, step_fn: Callable = steps.train_step,
                   context: str | None = None,
                   compiler_options: dict | None = None) -> programs.Program:
  """`step_fn` (`steps.train_step`) compiled for `mesh` (with `compiler_options`); the
  input state is donated. With a run's `context` the compiled program is kept (`programs`)."""
  return programs.Program(jax.jit(
      step_fn,
      in_shardings=(replicated(mesh), batch_sharded(mesh)),
      out_shardings=(replicated(mesh), replicated(mesh)),
      donate_argnums=0), 'train_step', context, compiler_options=compiler_options)


def compile_step(jitted: programs.Program, state, host_batch: dict, mesh: Mesh):
  """`jitted(state, batch)` compiled ahead of time for global batches of which `host_batch`
  is this process's rows (as `put_batch` assembles them)."""
  sharding = batch_sharded(mesh)
  batch = {key: jax.ShapeDtypeStruct((len(value) * jax.process_count(), *np.shape(value)[1:]),
                                     np.asarray(value).dtype, sharding=sharding)
           for key, value in host_batch.items()}
  return jitted.compile(state, batch)


def jit_eval_step(mesh: Mesh, step_fn: Callable = steps.eval_step, context: str | None = None,
                  name: str = 'eval_step', compiler_options: dict | None = None
                  ) -> programs.Program:
  """`step_fn` (`steps.eval_step`) compiled for `mesh` (with `compiler_options`), kept
  under `name` in `context`."""
  return programs.Program(jax.jit(
      step_fn,
      in_shardings=(replicated(mesh), batch_sharded(mesh)),
      out_shardings=replicated(mesh)), name, context, compiler_options=compiler_options)
