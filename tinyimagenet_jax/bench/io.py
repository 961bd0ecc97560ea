"""Data and checkpoint figures of one config.

`pipeline`: images/s of the config's grain training pipeline (decode,
preprocess, augment, batch), read from the training split with the config's
threads and worker processes, after `--warmup` batches.

`checkpoint`: the config's TrainState on disk (MB), the time a save blocks
the loop and its total time (Orbax finishes in the background), the restore
time, and what one save costs a training run: `--batches` train steps with a
save in the middle against the same steps without, alternated three times
(medians).
"""

import pathlib
import tempfile
import time

import jax
import numpy as np

from tinyimagenet_jax import build, checkpoint
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.data import sources, transforms


def pipeline_throughput(args: common.Args) -> list[dict]:
  """Images/s of the training pipeline over `batches` batches after `warmup` ones."""
  config, batches, warmup = args.require_config(), args.batches, args.warmup
  source = sources.load(config.data, config.data.train_split)
  stream = build.train_stream(config, source, transforms.make_preprocess(config)[0])
  try:
    for _ in range(warmup):
      batch = next(stream)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(stream)
    seconds = time.perf_counter() - start
  finally:
    stream.close()
  return [{'what': 'pipeline', 'dataset': config.data.name, 'batch_size': config.batch_size,
          'image_shape': list(batch['image'].shape[1:]), 'num_workers': config.data.num_workers,
          'num_threads': config.data.num_threads, 'batches': batches,
          'seconds': round(seconds, 3),
          'images_per_second': round(batches * config.batch_size / seconds, 1)}]


def _directory_megabytes(path: pathlib.Path) -> float:
  return sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 2**20


def checkpoint_cost(args: common.Args) -> list[dict]:
  """Checkpoint size, save and restore times, and a save's cost to training steps."""
  config, batches, warmup = args.require_config(), args.batches, args.warmup
  run = build.build(config)
  state, stream, step = run.state, run.train_batches(), run.train_step
  batch = run.device_batch(next(stream))
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
  return [{'what': 'checkpoint', 'model': config.model.name, 'megabytes': round(megabytes, 2),
          'save_blocking_seconds': round(blocking, 3), 'save_total_seconds': round(total, 3),
          'restore_seconds': round(restore, 3), 'steps': batches,
          'steps_seconds': round(float(np.median(plain)), 3),
          'steps_with_a_save_seconds': round(float(np.median(with_save)), 3),
          'one_save_costs_seconds': round(float(np.median(with_save) - np.median(plain)), 3)}]
