"""train_and_evaluate(config, workdir): the loop, stop rules, metrics, checkpoints.

Per epoch: train over whole batches, evaluate every eval split exactly once,
append a record to the history, write metrics files, save a checkpoint. A
rerun on the same workdir resumes from the newest checkpoint; a NaN/Inf loss
stops the run with the step; SIGTERM/SIGINT save a checkpoint, then stop.
"""

from collections.abc import Callable, Iterator
import contextlib
import itertools
import os
import pathlib
import shutil
import signal
import threading
import time

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from tinyimagenet_jax import analysis
from tinyimagenet_jax import atomic
from tinyimagenet_jax import build
from tinyimagenet_jax import checkpoint
from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import evaluation
from tinyimagenet_jax import members
from tinyimagenet_jax import parallel
from tinyimagenet_jax import progress as progress_lib
from tinyimagenet_jax import resumption
from tinyimagenet_jax import snapshots
from tinyimagenet_jax import writers
from tinyimagenet_jax.analysis import curves
from tinyimagenet_jax.data import resident
from tinyimagenet_jax.errors import NonFiniteLossError, TrainingInterrupted
from tinyimagenet_jax.state import TrainState, run_once, step_of

CURVES_PNG = 'curves.png'
SCHEDULE_PNG = 'schedule.png'
CONFIG_JSON = 'config.json'


def reached_target(history: list[dict], target: float | None) -> bool:
  """Training error at or below `target` in the last epoch; for K members, every
  member at or below it in some epoch so far."""
  if not history or target is None:
    return False
  if 'members' not in history[-1]:
    return history[-1]['train_error'] <= target
  return all(any(record['members'][index]['train_error'] <= target for record in history)
             for index in range(len(history[-1]['members'])))


def stopped_early(history: list[dict], rule: ml_collections.ConfigDict) -> bool:
  """The early-stopping rules (config.early_stopping), on the epoch records so far.

  'rising': the validation loss rose `rises` epochs in a row while the training
  loss fell (the second report's rule). 'patience': `metric` has not improved
  on its best for `patience` epochs.
  """
  if rule.rule == 'rising':
    recent = history[-rule.rises - 1:]
    return len(recent) == rule.rises + 1 and all(
        now['val_loss'] > before['val_loss'] and now['train_loss'] < before['train_loss']
        for before, now in zip(recent, recent[1:]))
  if rule.rule == 'patience' and history:
    values = [record[rule.metric] for record in history]
    best = int(np.argmax(values) if rule.mode == 'max' else np.argmin(values))
    return len(history) - 1 - best >= rule.patience
  return False


def is_finished(history: list[dict], config: ml_collections.ConfigDict) -> bool:
  """The stop rules: the epoch cap, the training-error target, early stopping."""
  return (len(history) >= config.num_epochs
          or reached_target(history, config.target_train_error)
          or stopped_early(history, config.early_stopping))


def checked(metrics: dict, step: int, last_saved: int | None) -> dict:
  """`metrics` of `step` as floats; NonFiniteLossError if the loss or gradient blew up."""
  host = {key: evaluation.as_host(np.asarray(value, np.float64)) for key, value in metrics.items()}
  if not np.any(np.isfinite(host['loss']) & np.isfinite(host['grad_norm'])):
    kept = (f'the last good checkpoint (step {last_saved}) is kept'
            if last_saved is not None else 'no checkpoint was saved yet')
    raise NonFiniteLossError(
        f"training stopped at step {step}: loss {host['loss']}, gradient norm"
        f" {host['grad_norm']}; lower --config.optimizer.learning_rate (now"
        f" {host.get('learning_rate', 'see config')}) or clip with"
        f' --config.optimizer.clip_global_norm=1.0 ({kept}).')
  return host


class HostCalls:
  """One step a call, on batches from the grain stream (whose position is checkpointed)."""

  def __init__(self, run: build.Run, stream: Iterator[dict], step: Callable):
    self.run, self.batches, self.step, self.steps_per_call = run, stream, step, 1

  def start_epoch(self, epoch: int) -> None:
    del epoch  # the stream runs on across epochs

  def __call__(self, state: TrainState, position: int, first_step: int, count: int):
    del position, first_step, count
    return self.step(state, self.run.device_batch(next(self.batches)))

  @staticmethod
  def per_step(metrics: dict, count: int) -> list[dict]:
    del count
    return [metrics]


class DeviceCalls:
  """`steps_per_call` steps a call, on batches gathered and augmented on the device; the
  call of that many steps is compiled ahead (others, after an unaligned resume, when met)."""

  def __init__(self, run: build.Run, state: TrainState):
    self.path, self.steps_per_call, self.order = run.device, run.device.steps_per_call, None
    self.seed = resident.seed_argument(run.config.seed)
    self.compiled = self.path.train_call.compile(
        state, self.path.splits['train'], self.path.epoch_order(0), 0, 0, self.seed,
        self.steps_per_call)

  def start_epoch(self, epoch: int) -> None:
    self.order = self.path.epoch_order(epoch - 1)

  def __call__(self, state: TrainState, position: int, first_step: int, count: int):
    data = self.path.splits['train']
    if count == self.steps_per_call:
      return self.compiled(state, data, self.order, position, first_step, self.seed)
    return self.path.train_call(state, data, self.order, position, first_step, self.seed, count)

  @staticmethod
  def per_step(metrics: dict, count: int) -> list[dict]:
    return [{key: value[index] for key, value in metrics.items()} for index in range(count)]


def train_epoch(
    state: TrainState, calls: HostCalls | DeviceCalls, first_step: int, steps_per_epoch: int,
    done: list[dict], progress: tqdm.tqdm | None, pause_after: Callable[[int, bool], bool],
    last_saved: int | None,
) -> tuple[TrainState, bool]:
  """Runs the epoch's remaining steps, a call of `calls.steps_per_call` at a time,
  appending each step's host metrics to `done`.

  Metrics are read back one call late, so the host never waits on the call it
  has just dispatched. Returns (state, paused): paused when `pause_after(step,
  is_last_step)`, asked after each call, wants to stop early (to save a
  checkpoint), with `done` complete up to that step.
  """
  pending = None

  def read_back(metrics: dict, count: int, last_step: int) -> None:
    host = calls.per_step(jax.device_get(metrics), count)
    done.extend(checked(m, last_step - count + 1 + i, last_saved) for i, m in enumerate(host))
    if progress is not None:
      progress.set_postfix(loss=f"{np.nanmean(done[-1]['loss']):.4f}",
                           acc=f"{np.nanmean(done[-1]['accuracy']):.4f}", refresh=False)

  position = len(done)
  while position < steps_per_epoch:
    count = min(calls.steps_per_call - position % calls.steps_per_call,
                steps_per_epoch - position)
    state, metrics = calls(state, position, first_step + position, count)
    if pending is not None:
      read_back(*pending)
    position += count
    pending = (metrics, count, first_step + position)
    if progress is not None:
      progress.update(count)
    if pause_after(first_step + position, position == steps_per_epoch):
      read_back(*pending)
      return state, True
  if pending is not None:
    read_back(*pending)
  return state, False


class StopRequests:
  """The signals that asked the run to save a checkpoint and stop, checked at call boundaries.

  One process: SIGTERM (preemption on Colab, TPU VMs, batch schedulers) and SIGINT are
  caught as they arrive. Several JAX processes: SIGTERM is left to JAX's preemption
  service, which tells every process that one was signalled; `at(step)` asks it at every
  call boundary, and it answers True at the same step everywhere, so all processes save
  the same checkpoint and stop together (a signal caught by one process alone would
  leave the others waiting for it in the next collective).
  """

  def __init__(self, synced: bool):
    self.signals: list[int] = []
    self.synced = synced

  def catch(self, signum: int, frame) -> None:
    del frame
    self.signals.append(signum)

  def at(self, step: int) -> bool:
    """Whether to save and stop after global step `step` (every process asks every step)."""
    if self.synced and not self.signals and multihost_utils.reached_preemption_sync_point(step):
      self.signals.append(signal.SIGTERM)
    return bool(self.signals)


@contextlib.contextmanager
def stop_requests():
  """A StopRequests for the loop, with SIGTERM and SIGINT handlers installed for its
  duration in a single-process run's main thread (nothing is installed elsewhere)."""
  stops = StopRequests(synced=jax.process_count() > 1)
  if stops.synced or threading.current_thread() is not threading.main_thread():
    yield stops
    return
  previous = {signum: signal.signal(signum, stops.catch)
              for signum in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield stops
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def train_record(epoch: int, steps_per_epoch: int, batch_size: int, step_metrics: list[dict],
                 seconds: float) -> dict:
  """The history record of one epoch's training half.

  Loss, accuracy and gradient norm are means over the epoch's steps (the
  training error of the reports); learning rate and momentum are the last step's.
  """
  mean = {key: float(np.mean([m[key] for m in step_metrics]))
          for key in ('loss', 'accuracy', 'grad_norm')}
  record = {
      'epoch': epoch,
      'step': epoch * steps_per_epoch,
      'train_loss': mean['loss'],
      'train_accuracy': mean['accuracy'],
      'train_error': 1.0 - mean['accuracy'],
      'grad_norm': mean['grad_norm'],
      'seconds': seconds,
      'images_per_second': steps_per_epoch * batch_size / seconds,
  }
  record.update({key: step_metrics[-1][key] for key in ('learning_rate', 'momentum')
                 if key in step_metrics[-1]})
  return record


def eval_record(name: str, result: dict) -> dict:
  """`evaluate`'s result as history fields prefixed by the split name."""
  return {f'{name}_loss': result['loss'], f'{name}_top1': result['top1'],
          f'{name}_top5': result['top5'], f'{name}_error': 1.0 - result['top1']}


def epoch_record(epoch: int, steps_per_epoch: int, batch_size: int, step_metrics: list[dict],
                 seconds: float, eval_results: dict[str, dict], count: int) -> dict:
  """The history record of one epoch: training means and every eval split's
  results; for `count` > 1 members, their mean plus each member's own record."""

  def one(index: int | None) -> dict:
    chosen = (lambda values: values) if index is None else (
        lambda values: members.pick(values, index))
    record = train_record(epoch, steps_per_epoch, batch_size,
                          [chosen(metrics) for metrics in step_metrics], seconds)
    for name, result in eval_results.items():
      record.update(eval_record(name, chosen(result)))
    return record

  if count == 1:
    return one(None)
  return members.combine([one(index) for index in range(count)])


def summarize(record: dict) -> str:
  """One line per epoch for the terminal."""
  evals = ' | '.join(
      f"{name} loss {record[f'{name}_loss']:.4f} top-1 {record[f'{name}_top1']:.4f}"
      for name in writers.eval_names(record))
  return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
          f" error {record['train_error']:.4f} | {evals} |"
          f" {record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The resolved config as `<workdir>/config.json`."""
  atomic.write_text(os.path.join(workdir, CONFIG_JSON), config.to_json_best_effort(indent=2) + '\n')


def start_over(workdir: str) -> None:
  """Deletes a workdir's checkpoints and metric files (config.restart)."""
  shutil.rmtree(checkpoint.directory(workdir), ignore_errors=True)
  for name in (writers.METRICS_JSONL, writers.METRICS_CSV, writers.MEMBERS_CSV, writers.STEPS_JSONL, CURVES_PNG,
               SCHEDULE_PNG):
    pathlib.Path(workdir, name).unlink(missing_ok=True)
  shutil.rmtree(os.path.join(workdir, 'tensorboard'), ignore_errors=True)


class NoMetricFiles:
  """`writers.MetricWriter` writing nothing: with several JAX processes sharing one
  workdir, only the first writes the metric files."""

  def write(self, history: list[dict]) -> None:
    del history

  def write_steps(self, first_step: int, step_metrics: list[dict]) -> None:
    del first_step, step_metrics

  def close(self) -> None:
    pass


def initialise_from(state: TrainState, path: str) -> TrainState:
  """`state` with every parameter and batch statistic whose name and shape match
  those saved in another run's checkpoint (config.init_from)."""
  saved = checkpoint.load_saved_variables(path)
  params, taken, total = checkpoint.merge_matching(jax.device_get(state.params), saved['params'])
  batch_stats, _, _ = checkpoint.merge_matching(jax.device_get(state.batch_stats),
                                                saved['batch_stats'])
  tqdm.tqdm.write(f'Initialised {taken} of {total} parameter arrays from {path}.')
  # One program: optax's init run eagerly compiled one per small op (63 for a LeNet's
  # OneCycle Adam, about a second on an empty compilation cache).
  return state.replace(params=params, batch_stats=batch_stats,
                       opt_state=run_once(state.tx.init, params, name='optimizer_init'))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[TrainState, list[dict]]:
  """Trains until a stop rule holds; returns the final state and the history.

  Rerunning on the same workdir resumes exactly from the newest checkpoint
  (saved at epoch ends at least `checkpoint_min_seconds` apart and at the last, every
  `checkpoint_every_steps`, and on SIGTERM or SIGINT): the same parameters and metrics as
  a run never interrupted.
  """
  run = build.build(config)
  mesh, state, steps_per_epoch = run.mesh, run.state, run.steps_per_epoch

  os.makedirs(workdir, exist_ok=True)
  # Several JAX processes (jax.distributed) share the workdir: each reads its own rows of
  # every batch and saves its part of each checkpoint; only the first writes the other files.
  writes_files = jax.process_index() == 0
  if config.restart:
    if writes_files:
      start_over(workdir)
    if jax.process_count() > 1:  # the others wait until the old checkpoints are gone
      multihost_utils.sync_global_devices('start over')
  checkpoints = checkpoint.Checkpoints(
      checkpoint.directory(workdir), config.max_checkpoints_to_keep,
      config.keep_best_checkpoints, config_lib.best_metric(config), config.best_mode,
      config.checkpoint_min_seconds)
  stream = run.train_batches() if run.device is None else None
  try:
    restored = checkpoints.restore_latest(
        state, stream, lambda saved: resumption.check_resumable(
            saved, config, config_lib.base_config(), workdir))
  except BaseException:
    if stream is not None:
      stream.close()
    checkpoints.close()
    raise
  if writes_files:
    _write_config(config, workdir)
  if restored is not None:
    state, progress = restored
    tqdm.tqdm.write(f'Resuming {workdir} from step {step_of(state)}'
                    f' (epoch {len(progress.history)}, {len(progress.epoch_steps)} steps into'
                    ' the next).')
  else:
    progress = checkpoint.Progress()
    if config.init_from:
      state = parallel.put_replicated(initialise_from(state, config.init_from), mesh)

  writer = writers.MetricWriter(workdir) if writes_files else NoMetricFiles()
  history = progress.history
  if writes_files:
    writers.write_history_files(workdir, history)
    writers.truncate_steps(workdir, len(history) * steps_per_epoch)
  last_saved = checkpoints.latest_step()
  bar = None
  try:
    calls = None
    if not is_finished(history, config):  # a finished run is only read back
      start = time.perf_counter()
      if run.device is None:
        first_batch = next(stream)
        start = time.perf_counter()
        calls = HostCalls(run, itertools.chain([first_batch], stream),
                          parallel.compile_step(run.train_step, state, first_batch, mesh))
      else:
        calls = DeviceCalls(run, state)
      where = 'the host' if run.device is None else 'the device'
      tqdm.tqdm.write(f'Compiled the train step in {time.perf_counter() - start:.1f} s for'
                      f' {mesh.size} device(s), {calls.steps_per_call} step(s) a call, batches'
                      f' made on {where}.')
    if config.write_plots and writes_files and calls is not None:
      analysis.import_in_background()
    with stop_requests() as stops:

      def pause_after(step: int, is_last_step: bool) -> bool:
        every = config.checkpoint_every_steps
        return stops.at(step) or bool(every and step % every < calls.steps_per_call
                                       and not is_last_step)

      while not is_finished(history, config):
        epoch = len(history) + 1
        bar = (progress_lib.bar(total=steps_per_epoch, initial=len(progress.epoch_steps),
                                desc=f'epoch {epoch}/{config.num_epochs}', unit='step',
                                every_seconds=config.progress_seconds)
               if config.progress_bar else None)
        start = time.perf_counter() - progress.epoch_seconds
        first_step = (epoch - 1) * steps_per_epoch
        calls.start_epoch(epoch)
        while True:
          state, paused = train_epoch(state, calls, first_step, steps_per_epoch,
                                      progress.epoch_steps, bar, pause_after, last_saved)
          progress.epoch_seconds = time.perf_counter() - start
          if not paused:
            break
          checkpoints.save(state, stream, progress, config)
          last_saved = first_step + len(progress.epoch_steps)
          if stops.signals:
            raise TrainingInterrupted(stops.signals[0], last_saved, workdir)
        if bar is not None:
          bar.close()
        writer.write_steps(first_step + 1, progress.epoch_steps)
        results = {name: evaluation.evaluate(run, state, name).metrics
                   for name in run.eval_sources}
        record = epoch_record(epoch, steps_per_epoch, config.batch_size, progress.epoch_steps,
                              progress.epoch_seconds, results, members.member_count(config))
        history.append(record)
        if writes_files:
          snapshots.save_if_chosen(state, epoch, config.snapshot_epochs, workdir)
        progress = checkpoint.Progress(history)
        writer.write(history)
        if checkpoints.save(state, stream, progress, config,
                            metrics={k: v for k, v in record.items() if isinstance(v, float)},
                            skippable=not (is_finished(history, config)
                                           or config.keep_best_checkpoints)):
          last_saved = record['step']
        tqdm.tqdm.write(summarize(record))
  finally:
    if bar is not None:
      bar.close()
    if stream is not None:
      stream.close()
    writer.close()
    checkpoints.close()
  if config.write_plots and history and writes_files:
    title = f'{config.model.name} on {config.data.name}'
    curves.plot_history(history, os.path.join(workdir, CURVES_PNG), title=title)
    curves.plot_steps(writers.read_steps(workdir), os.path.join(workdir, SCHEDULE_PNG),
                      title=title)
  return state, history
