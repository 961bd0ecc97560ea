"""The one Orbax checkpoint wrapper: TrainState + metric history, resume.

Checkpoints live in `<workdir>/checkpoints/<step>`; Orbax writes each one to a
temporary folder and renames it when complete, so a crash mid-save leaves the
previous checkpoint intact. Restoring goes through an abstract state carrying
the current shardings, so arrays land on the current mesh.
"""

import os

import jax
import orbax.checkpoint as ocp

from tinyimagenet_jax.state import TrainState


class Checkpoints:
  """Saves and restores (state, history) under `directory`."""

  def __init__(self, directory: str, max_to_keep: int):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, state: TrainState, history: list[dict]) -> None:
    """Starts saving in the background; the next save or `close` waits for it."""
    self._manager.save(
        int(jax.device_get(state.step)),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            history=ocp.args.JsonSave({'epochs': history})))

  def restore_latest(self, like: TrainState) -> tuple[TrainState, list[dict]] | None:
    """The newest (state, history), shaped and sharded like `like`; None if none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            history=ocp.args.JsonRestore()))
    return restored.state, restored.history['epochs']

  def close(self) -> None:
    """Waits for a save in flight, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
