"""Benchmarks (not tests): print a table of measured figures and write it as JSON.

    python -m tinyimagenet_jax.bench --config=configs/<x>.py [--config.<field>=...] \
        --what=pipeline --batches=100 [--json=results.json]

`pipeline`: images/s of the config's grain training pipeline (decode,
preprocess, augment, batch), read from the training split with the config's
threads and worker processes, after `--warmup` batches.

`checkpoint`: the config's TrainState on disk (MB), the time a save blocks
the loop and its total time (Orbax finishes in the background), the restore
time, and what one save costs a training run: `--batches` train steps with a
save in the middle against the same steps without, alternated three times
(medians).
"""

from collections.abc import Callable
import json
import pathlib
import tempfile
import time

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from tinyimagenet_jax import checkpoint, models, optim, parallel
from tinyimagenet_jax.data import batch_ops, pipeline, sources, transforms
from tinyimagenet_jax.state import create_train_state


def pipeline_throughput(config: ml_collections.ConfigDict, batches: int, warmup: int) -> dict:
  """Images/s of the training pipeline over `batches` batches after `warmup` ones."""
  source = sources.load(config.data, config.data.train_split)
  train_transform, _ = transforms.make_preprocess(config)
  dataset = pipeline.train_dataset(source, train_transform, config.batch_size, config.seed,
                                   batch_ops.make_batch_transform(config))
  stream = pipeline.iterate(dataset, config.data)
  try:
    for _ in range(warmup):
      batch = next(stream)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(stream)
    seconds = time.perf_counter() - start
  finally:
    stream.close()
  return {'what': 'pipeline', 'dataset': config.data.name, 'batch_size': config.batch_size,
          'image_shape': list(batch['image'].shape[1:]), 'num_workers': config.data.num_workers,
          'num_threads': config.data.num_threads, 'batches': batches,
          'seconds': round(seconds, 3),
          'images_per_second': round(batches * config.batch_size / seconds, 1)}


def _directory_megabytes(path: pathlib.Path) -> float:
  return sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 2**20


def checkpoint_cost(config: ml_collections.ConfigDict, batches: int, warmup: int) -> dict:
  """Checkpoint size, save and restore times, and a save's cost to training steps."""
  mesh = parallel.make_mesh()
  source = sources.load(config.data, config.data.train_split)
  train_transform, eval_transform = transforms.make_preprocess(config)
  model = models.build_model(config.model, len(source.class_names))
  tx = optim.build_optimizer(config.optimizer, 100, config.num_epochs)
  state = parallel.put_replicated(create_train_state(
      model, tx, config.seed, eval_transform(source[0])['image'].shape), mesh)
  stream = pipeline.iterate(
      pipeline.train_dataset(source, train_transform, config.batch_size, config.seed),
      config.data)
  batch = parallel.put_batch(next(stream), mesh)
  step = parallel.jit_train_step(mesh)
  progress = checkpoint.Progress()
  with tempfile.TemporaryDirectory() as directory:
    saves = checkpoint.Checkpoints(directory, keep=100)

    def run_steps(save_at: int | None) -> float:
      nonlocal state
      start = time.perf_counter()
      for index in range(batches):
        state, metrics = step(state, batch)
        if index == save_at:
          saves.save(state, stream, progress, config)
      jax.block_until_ready(metrics)
      saves.wait_until_finished()
      return time.perf_counter() - start

    for _ in range(warmup):
      state, _ = step(state, batch)
    start = time.perf_counter()
    saves.save(state, stream, progress, config)
    blocking = time.perf_counter() - start
    saves.wait_until_finished()
    total = time.perf_counter() - start
    latest = pathlib.Path(directory, str(int(state.step)))
    megabytes = _directory_megabytes(latest)
    start = time.perf_counter()
    saves.restore_latest(state, stream)
    restore = time.perf_counter() - start
    plain, with_save = [], []
    for _ in range(3):
      plain.append(run_steps(None))
      with_save.append(run_steps(batches // 2))
    saves.close()
  stream.close()
  return {'what': 'checkpoint', 'model': config.model.name, 'megabytes': round(megabytes, 2),
          'save_blocking_seconds': round(blocking, 3), 'save_total_seconds': round(total, 3),
          'restore_seconds': round(restore, 3), 'steps': batches,
          'steps_seconds': round(float(np.median(plain)), 3),
          'steps_with_a_save_seconds': round(float(np.median(with_save)), 3),
          'one_save_costs_seconds': round(float(np.median(with_save) - np.median(plain)), 3)}


BENCHMARKS: dict[str, Callable[[ml_collections.ConfigDict, int, int], dict]] = {
    'pipeline': pipeline_throughput,
    'checkpoint': checkpoint_cost,
}


def format_row(result: dict) -> str:
  """One result as `key=value` pairs on a line."""
  return '  '.join(f'{key}={value}' for key, value in result.items())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  result = BENCHMARKS[_WHAT.value](_CONFIG.value, _BATCHES.value, _WARMUP.value)
  print(format_row(result))
  if _JSON.value:
    with open(_JSON.value, 'w') as file:
      json.dump(result, file, indent=2)


if __name__ == '__main__':
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config whose data to measure.')
  _WHAT = flags.DEFINE_enum('what', 'pipeline', list(BENCHMARKS), 'What to measure.')
  _BATCHES = flags.DEFINE_integer('batches', 100, 'Batches to time.')
  _WARMUP = flags.DEFINE_integer('warmup', 5, 'Batches read before timing.')
  _JSON = flags.DEFINE_string('json', '', 'Also write the result to this JSON file.')
  flags.mark_flags_as_required(['config'])
  app.run(main)
