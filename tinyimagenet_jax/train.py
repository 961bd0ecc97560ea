"""train_and_evaluate(config, workdir): the loop, stop rules, metrics, checkpoints.

Per epoch: train over whole batches, evaluate every eval split exactly once,
append a record to the history, write metrics files, save a checkpoint. A
rerun on the same workdir resumes from the newest checkpoint.
"""

from collections.abc import Callable, Iterator
import itertools
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm

from tinyimagenet_jax import checkpoint
from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import models
from tinyimagenet_jax import optim
from tinyimagenet_jax import parallel
from tinyimagenet_jax import writers
from tinyimagenet_jax.analysis import curves
from tinyimagenet_jax.data import batch_ops
from tinyimagenet_jax.data import pipeline
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.state import TrainState, create_train_state

CURVES_PNG = 'curves.png'
SCHEDULE_PNG = 'schedule.png'
CONFIG_JSON = 'config.json'


def is_finished(history: list[dict], config: ml_collections.ConfigDict) -> bool:
  """The stop rules: the epoch cap, or training error at or below the target."""
  if len(history) >= config.num_epochs:
    return True
  target = config.target_train_error
  return bool(history) and target is not None and history[-1]['train_error'] <= target


def resolve_steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """`config.steps_per_epoch`, or whole batches in one pass when it is 0."""
  full_pass = num_examples // config.batch_size
  if not full_pass:
    raise ConfigError(
        f'config.batch_size={config.batch_size} is larger than the'
        f' {num_examples} training examples; use a smaller batch.')
  return config.steps_per_epoch or full_pass


def evaluate(state: TrainState, eval_step: Callable, batches: Iterator[dict], mesh) -> dict:
  """Mean loss, top-1 and top-5 accuracy over every real example of `batches`."""
  sums = [eval_step(state, parallel.put_batch(batch, mesh)) for batch in batches]
  totals = {key: float(np.sum([s[key] for s in jax.device_get(sums)], dtype=np.float64))
            for key in sums[0]}
  count = totals['count']
  return {'loss': totals['loss_sum'] / count, 'top1': totals['top1_hits'] / count,
          'top5': totals['top5_hits'] / count, 'count': int(count)}


def train_epoch(
    state: TrainState, train_step: Callable, batches: Iterator[dict], mesh,
    num_steps: int, progress: tqdm.tqdm | None,
) -> tuple[TrainState, list[dict]]:
  """`num_steps` steps; returns the state and each step's metrics on the host.

  Metrics are read back one step late, so the host never waits on the step
  it has just dispatched.
  """
  step_metrics = []
  for index in range(num_steps):
    state, metrics = train_step(state, parallel.put_batch(next(batches), mesh))
    step_metrics.append(metrics)
    if progress is not None:
      if index:
        shown = jax.device_get(step_metrics[index - 1])
        progress.set_postfix(loss=f"{shown['loss']:.4f}", acc=f"{shown['accuracy']:.4f}",
                             refresh=False)
      progress.update()
  host = jax.device_get(step_metrics)
  return state, [{key: float(value) for key, value in metrics.items()} for metrics in host]


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


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[TrainState, list[dict]]:
  """Trains until a stop rule holds; returns the final state and the history."""
  mesh = parallel.make_mesh()
  config_lib.validate(config, mesh.size)
  splits = sources.load_splits(config.data, config.seed)
  steps_per_epoch = resolve_steps_per_epoch(config, len(splits.train))
  train_transform, eval_transform = transforms.make_preprocess(config)
  input_shape = eval_transform(splits.train[0])['image'].shape
  model = models.build_model(config.model, len(splits.class_names))
  tx = optim.build_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
  state = parallel.put_replicated(
      create_train_state(model, tx, config.seed, input_shape,
                         label_smoothing=config.label_smoothing,
                         compute_dtype=config.compute_dtype), mesh)

  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  checkpoints = checkpoint.Checkpoints(
      os.path.join(workdir, 'checkpoints'), config.max_checkpoints_to_keep)
  state, history = checkpoints.restore_latest(state) or (state, [])
  if history:
    tqdm.tqdm.write(f'Resuming {workdir} from step {int(state.step)} (epoch {len(history)}).')

  stream = pipeline.iterate(
      pipeline.train_dataset(splits.train, train_transform, config.batch_size, config.seed,
                             batch_ops.make_batch_transform(config)),
      config.data, start=int(jax.device_get(state.step)))
  first_batch = next(stream)
  batches = itertools.chain([first_batch], stream)
  start = time.perf_counter()
  train_step = parallel.compile_train_step(mesh, state, first_batch)
  tqdm.tqdm.write(f'Compiled the train step in {time.perf_counter() - start:.1f} s'
                  f' for {mesh.size} device(s).')
  eval_step = parallel.jit_eval_step(mesh)
  eval_sets = {name: pipeline.eval_dataset(source, eval_transform, config.eval_batch_size)
               for name, source in splits.evals.items()}
  writer = writers.MetricWriter(workdir)
  writers.write_history_files(workdir, history)
  writers.truncate_steps(workdir, int(jax.device_get(state.step)))
  try:
    while not is_finished(history, config):
      epoch = len(history) + 1
      progress = (tqdm.tqdm(total=steps_per_epoch, desc=f'epoch {epoch}/{config.num_epochs}',
                            unit='step', dynamic_ncols=True)
                  if config.progress_bar else None)
      start = time.perf_counter()
      state, step_metrics = train_epoch(
          state, train_step, batches, mesh, steps_per_epoch, progress)
      seconds = time.perf_counter() - start
      if progress is not None:
        progress.close()
      writer.write_steps((epoch - 1) * steps_per_epoch + 1, step_metrics)
      record = train_record(epoch, steps_per_epoch, config.batch_size, step_metrics, seconds)
      for name, dataset in eval_sets.items():
        result = evaluate(state, eval_step, pipeline.iterate(dataset, config.data), mesh)
        record.update(eval_record(name, result))
      history.append(record)
      writer.write(history)
      if epoch % config.checkpoint_every_epochs == 0 or is_finished(history, config):
        checkpoints.save(state, history)
      tqdm.tqdm.write(summarize(record))
  finally:
    stream.close()
    writer.close()
    checkpoints.close()
  if config.write_plots and history:
    title = f'{config.model.name} on {config.data.name}'
    curves.plot_history(history, os.path.join(workdir, CURVES_PNG), title=title)
    curves.plot_steps(writers.read_steps(workdir), os.path.join(workdir, SCHEDULE_PNG),
                      title=title)
  return state, history
