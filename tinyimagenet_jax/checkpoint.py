"""The one Orbax checkpoint wrapper: everything needed to continue a run exactly.

A checkpoint (`<workdir>/checkpoints/<step>/`) holds four items:

    state     the TrainState (arrays)
    data      the grain iterator's position (grain.checkpoint); absent on the
              device path, where the step alone places the data
    progress  the metric history, the current epoch's per-step metrics so far
              (for a save in mid-epoch) and its elapsed seconds
    config    the run's config, to refuse resuming with one that would mix runs

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a crash mid-save leaves the previous one restorable. A checkpoint
damaged on disk afterwards (a truncated array, a missing item) is reported in
one line, set aside as `damaged-<step>`, and the newest intact one is used. A save
may be skippable (an epoch end before the last): Orbax's continuous-checkpointing
policy then saves it only when `min_seconds` have passed since the newest
checkpoint and none is still being written, decided by the first process for all. Restoring
goes through an abstract state carrying the current shardings, so arrays land
on the current mesh whatever device count wrote them. The newest `keep` and
the best `keep_best` (by an eval metric of the epoch-end saves) are kept.
"""

from collections.abc import Callable
import dataclasses
import json
import os
import pathlib
import sys
from typing import TYPE_CHECKING, TypeVar

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from tinyimagenet_jax.errors import ConfigError, DataError
from tinyimagenet_jax.models import pretrained
from tinyimagenet_jax.state import TrainState, step_of

if TYPE_CHECKING:
  import grain

CHECKPOINTS = 'checkpoints'
DAMAGED_PREFIX = 'damaged-'  # a damaged checkpoint's folder, renamed out of Orbax's sight
T = TypeVar('T')


def grain_checkpoint():
  """grain's checkpoint handlers (`grain.checkpoint`), imported when a host-path iterator is
  saved or restored: a run on the device path never imports grain."""
  import grain  # pylint: disable=import-outside-toplevel,redefined-outer-name
  return grain.checkpoint


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


class DamagedCheckpoint(Exception):
  """A checkpoint that cannot be read whole: an item missing, truncated or unparsable."""

  def __init__(self, step: int, error: BaseException):
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ''
    super().__init__(f'checkpoint {step} is damaged ({type(error).__name__}: {reason})'
                     if reason else f'checkpoint {step} is damaged ({type(error).__name__})')
    self.step = step


class Checkpoints:
  """Saves and restores (state, data position, progress, config) under `directory`."""

  def __init__(self, directory: str, keep: int, keep_best: int = 0, best_metric: str = '',
               best_mode: str = 'max', min_seconds: int = 0):
    self.directory, self.min_seconds = os.path.abspath(directory), min_seconds
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=True, preservation_policy=_preservation(keep, keep_best, best_metric,
                                                           best_mode),
            save_decision_policy=checkpoint_managers.ContinuousCheckpointingPolicy(
                minimum_interval_secs=min_seconds)))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every complete checkpoint kept, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, data: 'grain.DatasetIterator | None', progress: Progress,
           config: ml_collections.ConfigDict, metrics: dict | None = None,
           skippable: bool = False) -> bool:
    """Starts saving in the background (the next save or `close` waits for it); returns
    whether it saves: always, unless `skippable` with `min_seconds` set and the newest
    checkpoint younger than that or still being written.

    `data` is the host pipeline's iterator (None on the device path, where the
    step alone says where the data is); `metrics` (an epoch's eval results) rank
    the checkpoint for keep_best.
    """
    items = dict(state=ocp.args.StandardSave(state),
                 progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
                 config=ocp.args.JsonSave(config.to_dict()))
    if data is not None:
      items['data'] = grain_checkpoint().CheckpointSave(data)
    return self._manager.save(step_of(state), args=ocp.args.Composite(**items), metrics=metrics,
                              force=not (skippable and self.min_seconds))

  def restore_latest(self, like: TrainState, data: 'grain.DatasetIterator | None',
                     accept: Callable[[dict], None] = lambda config: None
                     ) -> tuple[TrainState, Progress] | None:
    """The newest intact state (shaped and sharded like `like`) and progress; moves `data`
    (the host pipeline's iterator, None on the device path) to its saved position.

    `accept(saved config)` raises to refuse continuing a checkpoint (a changed config);
    it sees the config before any array is read. A checkpoint that cannot be read whole
    is damaged: a warning line names it and what was wrong, and the next older one is
    tried. None if there is no checkpoint; a DataError if none is intact; a ConfigError
    if it was written on the other data path.
    """
    items = dict(state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                             like)),
                 progress=ocp.args.JsonRestore())

    def restore(step: int):
      accept(self._read(step, config=ocp.args.JsonRestore()).config)
      self._check_data_path(step, data)
      position = self._other_process_count_position(step) if data is not None else None
      data_item = ({'data': grain_checkpoint().CheckpointRestore(data)}
                   if data is not None and position is None else {})
      restored = self._read(step, **items, **data_item)
      if position is not None:
        data.set_state(position)
      return restored.state, Progress(**restored.progress)

    return self._newest_intact(restore)

  def restore_state(self, like: TrainState) -> TrainState:
    """The newest intact saved state, shaped and sharded like `like` (for evaluation)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._newest_intact(
        lambda step: self._read(step, state=ocp.args.StandardRestore(abstract)).state)
    if restored is None:
      raise DataError(f'no checkpoint in {self.directory}; train first (--config.mode=train).')
    return restored

  def _read(self, step: int, **items):
    """The named items of checkpoint `step`; a DamagedCheckpoint if any cannot be read."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:  # pylint: disable=broad-except
      # Orbax and TensorStore raise ValueError, KeyError, FileNotFoundError and plain
      # Exception for unreadable items; the saved config, read first, has already ruled
      # out a mismatch with the state's shapes.
      raise DamagedCheckpoint(step, error) from error

  def _check_data_path(self, step: int, data: 'grain.DatasetIterator | None') -> None:
    """ConfigError unless checkpoint `step` was written on this run's data path."""
    saved_on_host = (pathlib.Path(self.directory) / str(step) / 'data').exists()
    if saved_on_host != (data is not None):
      trained, now = ('host', 'device') if saved_on_host else ('device', 'host')
      raise ConfigError(
          f'the checkpoints in {self.directory} were trained with batches made on the'
          f' {trained}, and this run makes them on the {now}, which draws another data order;'
          f' rerun with --config.data.placement={trained}, or use another --workdir.')

  def _other_process_count_position(self, step: int) -> dict | None:
    """The data position checkpoint `step` saved under another process count, or None when
    it was saved under this one. Every process of a run stands at the same element of its
    stream (element s is its rows of step s), so any process's position serves all of
    this run's; a position with worker processes' state (data.num_workers) does not."""
    folder = pathlib.Path(self.directory, str(step), 'data')
    if (folder / f'process_{jax.process_index()}-of-{jax.process_count()}.json').exists():
      return None
    saved = sorted(folder.glob('process_*-of-*.json'))
    if not saved:
      return None  # the item is missing: the restore reports the damage
    position = json.loads(saved[0].read_text())
    if set(position) != {'next_index'}:
      raise ConfigError(
          f'checkpoint {step} in {self.directory} was saved by {saved[0].stem.split("-of-")[1]}'
          f' process(es) with grain worker processes, and this run has'
          f' {jax.process_count()}; resume with the same process count, or with'
          ' --config.data.num_workers=0 from a checkpoint saved with it.')
    return position

  def _newest_intact(self, restore: Callable[[int], T]) -> T | None:
    """`restore(step)` of the newest checkpoint it can read whole, or None without any.

    Each damaged checkpoint met first is reported in one line and set aside (renamed
    `damaged-<step>`, by the first process), so the run's next saves do not meet it.
    """
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = restore(step)
      except DamagedCheckpoint as error:
        print(f'warning: {error}; trying the one before.', file=sys.stderr, flush=True)
        damaged.append(error)
        continue
      self._set_aside([error.step for error in damaged])
      return restored
    if damaged:
      raise DataError(
          f'no intact checkpoint in {self.directory} ({"; ".join(map(str, damaged))}); use'
          ' another --workdir or add --config.restart=True to start over.')
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames the damaged checkpoints `steps` to damaged-<step> (kept for a post-mortem)."""
    if steps and jax.process_index() == 0:
      for step in steps:
        folder = pathlib.Path(self.directory, str(step))
        folder.rename(folder.with_name(f'{DAMAGED_PREFIX}{step}'))
    if steps:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('damaged checkpoints set aside')
      self._manager.reload()

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
