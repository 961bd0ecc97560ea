"""The one Orbax checkpoint wrapper: everything needed to continue a run exactly.

A checkpoint (`<workdir>/checkpoints/<step>/`) holds four items:

    state     the TrainState (arrays)
    data      the grain iterator's position (grain.checkpoint); absent on the
              device path, where the step alone places the data
    progress  the metric history, the current epoch's per-step metrics so far
              (for a save in mid-epoch) and its elapsed seconds
    config    the run's config, to refuse resuming with one that would mix runs

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a crash mid-save leaves the previous one restorable. Restoring
goes through an abstract state carrying the current shardings, so arrays land
on the current mesh whatever device count wrote them. The newest `keep` and
the best `keep_best` (by an eval metric of the epoch-end saves) are kept.
"""

import dataclasses
import os
import pathlib

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from tinyimagenet_jax.errors import ConfigError, DataError
from tinyimagenet_jax.models import pretrained
from tinyimagenet_jax.state import TrainState, step_of


CHECKPOINTS = 'checkpoints'


def directory(workdir: str) -> str:
  """Where a run's checkpoints live: `<workdir>/checkpoints`."""
  return os.path.join(workdir, CHECKPOINTS)


@dataclasses.dataclass
class Progress:
  """Where the run is, besides the arrays: history and the epoch in flight."""

  history: list[dict] = dataclasses.field(default_factory=list)
  epoch_steps: list[dict] = dataclasses.field(default_factory=list)
  epoch_seconds: float = 0.0


def _preservation(keep: int, keep_best: int, best_metric: str, best_mode: str):
  policies = [checkpoint_managers.LatestN(keep)]
  if keep_best:
    policies.append(checkpoint_managers.BestN(
        get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == 'min',
        n=keep_best, keep_checkpoints_without_metrics=False))
  return checkpoint_managers.AnyPreservationPolicy(policies)


class Checkpoints:
  """Saves and restores (state, data position, progress, config) under `directory`."""

  def __init__(self, directory: str, keep: int, keep_best: int = 0, best_metric: str = '',
               best_mode: str = 'max'):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=True, preservation_policy=_preservation(keep, keep_best, best_metric,
                                                           best_mode)))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every complete checkpoint kept, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, data: grain.DatasetIterator | None, progress: Progress,
           config: ml_collections.ConfigDict, metrics: dict | None = None) -> None:
    """Starts saving in the background; the next save or `close` waits for it.

    `data` is the host pipeline's iterator (None on the device path, where the
    step alone says where the data is); `metrics` (an epoch's eval results) rank
    the checkpoint for keep_best.
    """
    items = dict(state=ocp.args.StandardSave(state),
                 progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
                 config=ocp.args.JsonSave(config.to_dict()))
    if data is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data)
    self._manager.save(step_of(state), args=ocp.args.Composite(**items), metrics=metrics)

  def saved_config(self) -> dict | None:
    """The config stored with the newest checkpoint, or None if there is none."""
    step = self.latest_step()
    if step is None:
      return None
    return self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

  def restore_latest(self, like: TrainState, data: grain.DatasetIterator | None
                     ) -> tuple[TrainState, Progress] | None:
    """The newest state (shaped and sharded like `like`) and progress; moves `data` (the
    host pipeline's iterator, None on the device path) to its saved position. None if
    there is no checkpoint; ConfigError if it was written on the other data path."""
    step = self.latest_step()
    if step is None:
      return None
    saved_on_host = (pathlib.Path(self.directory) / str(step) / 'data').exists()
    if saved_on_host != (data is not None):
      trained, now = ('host', 'device') if saved_on_host else ('device', 'host')
      raise ConfigError(
          f'the checkpoints in {self.directory} were trained with batches made on the'
          f' {trained}, and this run makes them on the {now}, which draws another data order;'
          f' rerun with --config.data.placement={trained}, or use another --workdir.')
    items = dict(state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                             like)),
                 progress=ocp.args.JsonRestore())
    if data is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored.state, Progress(**restored.progress)

  def restore_state(self, like: TrainState) -> TrainState:
    """The newest saved state, shaped and sharded like `like` (for evaluation)."""
    step = self.latest_step()
    if step is None:
      raise DataError(f'no checkpoint in {self.directory}; train first (--config.mode=train).')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract))).state

  def wait_until_finished(self) -> None:
    """Blocks until a save in flight is complete on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for a save in flight, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def state_directory(path: str) -> pathlib.Path:
  """The saved TrainState of a run, from its workdir, checkpoints folder or one step."""
  path = pathlib.Path(path).expanduser().absolute()  # Orbax reads absolute paths only
  if (path / 'state').is_dir():
    return path / 'state'
  steps_dir = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
  steps = sorted((int(p.name) for p in steps_dir.glob('[0-9]*') if p.name.isdigit()
                  and (p / 'state').is_dir()), reverse=True)
  if not steps:
    raise DataError(
        f'config.init_from={str(path)!r} holds no checkpoint; give a run\'s workdir, its'
        ' checkpoints folder, one <step> folder in it, or a Keras VGG16 .h5 or torchvision'
        ' ResNet-18 .pth file.')
  return steps_dir / str(steps[0]) / 'state'


def load_saved_variables(path: str) -> dict:
  """The params and batch_stats saved in another run's checkpoint, as numpy arrays.

  Read as host arrays, whatever devices wrote them, so any mesh can use them.
  A Keras VGG16 `.h5` or torchvision ResNet-18 `.pt`/`.pth` file is read by
  models/pretrained.py into the same form.
  """
  if pretrained.is_pretrained_file(path):
    return pretrained.load_pretrained(path)
  directory = state_directory(path)
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(directory).item_metadata.tree)
  saved = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return {'params': saved['params'], 'batch_stats': saved.get('batch_stats') or {}}


def merge_matching(target, source) -> tuple[object, int, int]:
  """`target` with each leaf replaced by `source`'s at the same path and shape.

  Returns (merged tree, leaves taken from source, leaves in target): a new
  classification head (another class count) keeps its fresh initialisation.
  """
  source_leaves = {jax.tree_util.keystr(path): leaf
                   for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
  taken = 0

  def pick(path, leaf):
    nonlocal taken
    saved = source_leaves.get(jax.tree_util.keystr(path))
    if saved is not None and saved.shape == leaf.shape:
      taken += 1
      return np.asarray(saved, leaf.dtype)
    return leaf

  merged = jax.tree_util.tree_map_with_path(pick, target)
  return merged, taken, len(jax.tree.leaves(target))
