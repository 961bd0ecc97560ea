"""train_and_evaluate(config, workdir): the loop, stop rules, metrics, checkpoints.

Per epoch: train over whole batches, evaluate every eval split exactly once,
append a record to the history, write metrics files, save a checkpoint. A
rerun on the same workdir resumes from the newest checkpoint; a NaN/Inf loss
stops the run with the step; SIGTERM/SIGINT save a checkpoint, then stop.
"""

from collections.abc import Callable, Iterator
import contextlib
import ctypes
import ctypes.util
import itertools
import json
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
import optax
import tqdm

from tinyimagenet_jax import checkpoint
from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import members
from tinyimagenet_jax import models
from tinyimagenet_jax import optim
from tinyimagenet_jax import parallel
from tinyimagenet_jax import snapshots
from tinyimagenet_jax import steps
from tinyimagenet_jax import writers
from tinyimagenet_jax.analysis import curves
from tinyimagenet_jax.data import batch_ops
from tinyimagenet_jax.data import pipeline
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from tinyimagenet_jax.state import TrainState, create_train_state, step_of

CURVES_PNG = 'curves.png'
SCHEDULE_PNG = 'schedule.png'
CONFIG_JSON = 'config.json'
CHECKPOINTS = 'checkpoints'
# Config keys that must match the checkpoint's for a resume to continue the same run.
RESUME_KEYS = ('seed', 'model', 'data.name', 'data.root', 'data.classes', 'data.subset_classes',
               'data.subset_split', 'data.subset_seed', 'data.validation_size', 'batch_size',
               'steps_per_epoch', 'members.count', 'members.seeds', 'members.learning_rates',
               'optimizer.freeze')


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


# glibc mallopt's M_ARENA_MAX, and the arenas kept: per-epoch threads then share them.
M_ARENA_MAX, MALLOC_ARENAS = -8, 2


def cap_malloc_arenas() -> None:
  """Caps glibc's malloc at MALLOC_ARENAS arenas (as MALLOC_ARENA_MAX=2 would); elsewhere nothing.

  Each epoch's evaluation (grain's reader threads) and checkpoint (Orbax's saver
  threads) run on fresh threads, and glibc gives new threads arenas of their own,
  up to 8 per core, which keep what those threads freed: the resident memory rose
  about 5 MB an epoch while the memory in use stayed flat. An explicit
  MALLOC_ARENA_MAX in the environment is left to rule.
  """
  if 'MALLOC_ARENA_MAX' in os.environ:
    return
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL(ctypes.util.find_library('c')).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def resolve_steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """`config.steps_per_epoch`, or whole batches in one pass when it is 0."""
  full_pass = num_examples // config.batch_size
  if not full_pass:
    raise ConfigError(
        f'config.batch_size={config.batch_size} is larger than the'
        f' {num_examples} training examples; use a smaller batch.')
  return config.steps_per_epoch or full_pass


def evaluate(state: TrainState, eval_step: Callable, batches: Iterator[dict], mesh) -> dict:
  """Mean loss, top-1 and top-5 accuracy over every real example of `batches`
  (for K stacked members, a list with each member's value)."""
  sums = jax.device_get([eval_step(state, parallel.put_batch(batch, mesh)) for batch in batches])
  totals = {key: np.sum([s[key] for s in sums], axis=0, dtype=np.float64) for key in sums[0]}
  count = totals['count']
  return {name: as_host(totals[key] / count) for name, key in
          (('loss', 'loss_sum'), ('top1', 'top1_hits'), ('top5', 'top5_hits'))} | {
              'count': as_host(count.astype(np.int64))}


def as_host(value):
  """A device or numpy scalar as a Python number; a per-member array as a list."""
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def checked(metrics: dict, step: int, last_saved: int | None) -> dict:
  """`metrics` of `step` as floats; NonFiniteLossError if the loss or gradient blew up."""
  host = {key: as_host(np.asarray(value, np.float64)) for key, value in metrics.items()}
  if not np.any(np.isfinite(host['loss']) & np.isfinite(host['grad_norm'])):
    kept = (f'the last good checkpoint (step {last_saved}) is kept'
            if last_saved is not None else 'no checkpoint was saved yet')
    raise NonFiniteLossError(
        f"training stopped at step {step}: loss {host['loss']}, gradient norm"
        f" {host['grad_norm']}; lower --config.optimizer.learning_rate (now"
        f" {host.get('learning_rate', 'see config')}) or clip with"
        f' --config.optimizer.clip_global_norm=1.0 ({kept}).')
  return host


def train_epoch(
    state: TrainState, train_step: Callable, batches: Iterator[dict], mesh, first_step: int,
    steps_per_epoch: int, done: list[dict], progress: tqdm.tqdm | None,
    pause_after: Callable[[int, bool], bool], last_saved: int | None,
) -> tuple[TrainState, bool]:
  """Runs the epoch's remaining steps, appending each step's host metrics to `done`.

  Metrics are read back one step late, so the host never waits on the step it
  has just dispatched. Returns (state, paused): paused when `pause_after(step,
  is_last_step)` asked to stop early (to save a checkpoint), with `done`
  complete up to that step.
  """
  pending = None
  for index in range(len(done), steps_per_epoch):
    step = first_step + index + 1
    state, metrics = train_step(state, parallel.put_batch(next(batches), mesh))
    if pending is not None:
      done.append(checked(jax.device_get(pending), step - 1, last_saved))
      if progress is not None:
        progress.set_postfix(loss=f"{np.nanmean(done[-1]['loss']):.4f}",
                             acc=f"{np.nanmean(done[-1]['accuracy']):.4f}", refresh=False)
    if progress is not None:
      progress.update()
    pending = metrics
    if pause_after(step, index == steps_per_epoch - 1):
      done.append(checked(jax.device_get(pending), step, last_saved))
      return state, True
  if pending is not None:
    done.append(checked(jax.device_get(pending), first_step + steps_per_epoch, last_saved))
  return state, False


@contextlib.contextmanager
def stop_requests():
  """Turns SIGTERM and SIGINT into a list the loop checks after every step.

  Preemption (Colab, TPU VMs, batch schedulers) sends SIGTERM; the loop then
  saves a checkpoint and stops. Outside the main thread nothing is installed.
  """
  requested: list[int] = []
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = {signum: signal.signal(signum, lambda signum, frame: requested.append(signum))
              for signum in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield requested
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
      for name in ('val', 'test') if f'{name}_loss' in record)
  return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
          f" error {record['train_error']:.4f} | {evals} |"
          f" {record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The resolved config as `<workdir>/config.json`."""
  with open(os.path.join(workdir, CONFIG_JSON), 'w') as file:
    file.write(config.to_json_best_effort(indent=2) + '\n')


def check_resumable(saved: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
  """ConfigError if `config` differs from the checkpoint's where resuming would mix runs."""
  current, defaults = config.to_dict(), config_lib.base_config().to_dict()
  for key in RESUME_KEYS:
    section, _, field = key.rpartition('.')

    def lookup(tree: dict, missing=None):
      return (tree.get(section, {}) if section else tree).get(field, missing)

    was = lookup(saved, lookup(defaults))  # keys added since the checkpoint: defaults
    now = lookup(current)
    if json.loads(json.dumps(was)) != json.loads(json.dumps(now)):
      raise ConfigError(
          f'config.{key}={now!r} differs from {was!r} in the checkpoint in {workdir}, so'
          ' resuming would mix two runs; rerun with the old value, use another --workdir,'
          ' or add --config.restart=True to start this one over.')


def start_over(workdir: str) -> None:
  """Deletes a workdir's checkpoints and metric files (config.restart)."""
  shutil.rmtree(os.path.join(workdir, CHECKPOINTS), ignore_errors=True)
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
  return state.replace(params=params, batch_stats=batch_stats,
                       opt_state=state.tx.init(params))


def initial_state(config: ml_collections.ConfigDict, model, steps_per_epoch: int,
                  input_shape: tuple[int, ...]) -> tuple[TrainState, Callable, Callable]:
  """The fresh state with its train and eval step functions: one model, or
  `members.member_count(config)` stacked members run by vmapped steps."""
  tx = optim.build_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
  options = dict(label_smoothing=config.label_smoothing, compute_dtype=config.compute_dtype)
  if members.member_count(config) == 1:
    state = create_train_state(model, tx, members.member_seeds(config)[0], input_shape, **options)
    return state, steps.train_step, steps.eval_step
  scales = [rate / config.optimizer.learning_rate for rate in members.member_learning_rates(config)]
  state = members.create_member_states(
      model, optax.chain(tx, members.scale_updates()), members.member_seeds(config), scales,
      input_shape, **options)
  return state, members.train_step, members.eval_step


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[TrainState, list[dict]]:
  """Trains until a stop rule holds; returns the final state and the history.

  Rerunning on the same workdir resumes exactly from the newest checkpoint
  (saved at each epoch end, every `checkpoint_every_steps`, and on SIGTERM or
  SIGINT): the same parameters and metrics as a run never interrupted.
  """
  cap_malloc_arenas()
  mesh = parallel.make_mesh()
  config_lib.validate(config, mesh.size)
  splits = sources.load_splits(config.data, config.seed)
  steps_per_epoch = resolve_steps_per_epoch(config, len(splits.train))
  train_transform, eval_transform = transforms.make_preprocess(config)
  input_shape = eval_transform(splits.train[0])['image'].shape
  model = models.build_model(config.model, len(splits.class_names))
  state, train_step_fn, eval_step_fn = initial_state(
      config, model, steps_per_epoch, input_shape)
  state = parallel.put_replicated(state, mesh)

  os.makedirs(workdir, exist_ok=True)
  # Several JAX processes (jax.distributed) share the workdir: each reads its own rows of
  # every batch and saves its part of each checkpoint; only the first writes the other files.
  process = {'process_index': jax.process_index(), 'process_count': jax.process_count()}
  writes_files = jax.process_index() == 0
  if config.restart:
    if writes_files:
      start_over(workdir)
    if jax.process_count() > 1:  # the others wait until the old checkpoints are gone
      multihost_utils.sync_global_devices('start over')
  checkpoints = checkpoint.Checkpoints(
      os.path.join(workdir, CHECKPOINTS), config.max_checkpoints_to_keep,
      config.keep_best_checkpoints, config.best_metric, config.best_mode)
  saved_config = checkpoints.saved_config()
  if saved_config is not None:
    check_resumable(saved_config, config, workdir)
  if writes_files:
    _write_config(config, workdir)
  stream = pipeline.iterate(
      pipeline.train_dataset(splits.train, train_transform, config.batch_size, config.seed,
                             batch_ops.make_batch_transform(config), **process),
      config.data)
  restored = checkpoints.restore_latest(state, stream)
  if restored is not None:
    state, progress = restored
    tqdm.tqdm.write(f'Resuming {workdir} from step {step_of(state)}'
                    f' (epoch {len(progress.history)}, {len(progress.epoch_steps)} steps into'
                    ' the next).')
  else:
    progress = checkpoint.Progress()
    if config.init_from:
      state = parallel.put_replicated(initialise_from(state, config.init_from), mesh)

  eval_step = parallel.jit_eval_step(mesh, eval_step_fn)
  eval_sets = {name: pipeline.eval_dataset(source, eval_transform, config.eval_batch_size,
                                           **process)
               for name, source in splits.evals.items()}
  writer = writers.MetricWriter(workdir) if writes_files else NoMetricFiles()
  history = progress.history
  if writes_files:
    writers.write_history_files(workdir, history)
    writers.truncate_steps(workdir, len(history) * steps_per_epoch)
  last_saved = checkpoints.latest_step()
  bar = None
  try:
    batches, train_step = stream, None
    if not is_finished(history, config):  # a finished run is only read back
      first_batch = next(stream)
      batches = itertools.chain([first_batch], stream)
      start = time.perf_counter()
      train_step = parallel.compile_train_step(mesh, state, first_batch, train_step_fn)
      tqdm.tqdm.write(f'Compiled the train step in {time.perf_counter() - start:.1f} s'
                      f' for {mesh.size} device(s).')
    with stop_requests() as requested:

      def pause_after(step: int, is_last_step: bool) -> bool:
        every = config.checkpoint_every_steps
        return bool(requested) or bool(every and step % every == 0 and not is_last_step)

      while not is_finished(history, config):
        epoch = len(history) + 1
        bar = (tqdm.tqdm(total=steps_per_epoch, initial=len(progress.epoch_steps),
                         desc=f'epoch {epoch}/{config.num_epochs}', unit='step',
                         dynamic_ncols=True)
               if config.progress_bar else None)
        start = time.perf_counter() - progress.epoch_seconds
        first_step = (epoch - 1) * steps_per_epoch
        while True:
          state, paused = train_epoch(state, train_step, batches, mesh, first_step,
                                      steps_per_epoch, progress.epoch_steps, bar, pause_after,
                                      last_saved)
          progress.epoch_seconds = time.perf_counter() - start
          if not paused:
            break
          checkpoints.save(state, stream, progress, config)
          last_saved = first_step + len(progress.epoch_steps)
          if requested:
            raise TrainingInterrupted(requested[0], last_saved, workdir)
        if bar is not None:
          bar.close()
        writer.write_steps(first_step + 1, progress.epoch_steps)
        results = {name: evaluate(state, eval_step, pipeline.iterate(dataset, config.data), mesh)
                   for name, dataset in eval_sets.items()}
        record = epoch_record(epoch, steps_per_epoch, config.batch_size, progress.epoch_steps,
                              progress.epoch_seconds, results, members.member_count(config))
        history.append(record)
        if writes_files:
          snapshots.save_if_chosen(state, epoch, config.snapshot_epochs, workdir)
        progress = checkpoint.Progress(history)
        writer.write(history)
        checkpoints.save(state, stream, progress, config,
                         metrics={k: v for k, v in record.items() if isinstance(v, float)})
        last_saved = record['step']
        tqdm.tqdm.write(summarize(record))
  finally:
    if bar is not None:
      bar.close()
    stream.close()
    writer.close()
    checkpoints.close()
  if config.write_plots and history and writes_files:
    title = f'{config.model.name} on {config.data.name}'
    curves.plot_history(history, os.path.join(workdir, CURVES_PNG), title=title)
    curves.plot_steps(writers.read_steps(workdir), os.path.join(workdir, SCHEDULE_PNG),
                      title=title)
  return state, history
