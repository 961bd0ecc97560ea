"""Host memory over a short training run: does it stay flat from epoch to epoch?

`memory_over_epochs`: each model (`--models`, default conv4 and resnet18) is
trained by `train.train_and_evaluate` in a fresh process and a temporary workdir,
for `--repeats` epochs of `--batches` steps, each epoch evaluated and
checkpointed as in a real run. A thread samples the resident memory (psutil:
the process and any grain workers) and how many epochs metrics.jsonl holds, so
each sample belongs to an epoch. Per epoch: the peak and the last RSS (MB); per
model: the growth of the last RSS from the first epoch to the last (the first
epoch holds the compilation) and the process's peak (`getrusage` max RSS).

    conv4     CIFAR-10 JPEG files (--config.data.root), cat and dog only, batch 128
    resnet18  the prepared 10-class Tiny ImageNet subset (--config.data.data_dir),
              two classes, batch 16

Two classes keep each epoch's evaluation (2,000 and 200 images) short.
"""

from collections.abc import Callable, Iterator, Sequence
import concurrent.futures
import contextlib
import multiprocessing
import os
import resource
import tempfile
import threading

import ml_collections

from tinyimagenet_jax import train, tuning, writers
from tinyimagenet_jax.bench import common, pipeline_vs_tfdata
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import sources

SAMPLE_SECONDS = 0.02
MEGABYTE = 2**20


def conv4_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """conv4 on two classes of the CIFAR-10 image folder, batch 128 (the pipeline bench's case)."""
  config = pipeline_vs_tfdata.cifar10_config(locations)
  config.data.classes = ('cat', 'dog')
  return config


def resnet18_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """resnet18 on two classes of the prepared 10-class Tiny ImageNet subset, batch 16."""
  config = base_config()
  config.data.name, config.data.data_dir = 'tiny_imagenet', locations.data_dir
  config.data.download, config.data.subset_classes = False, 10
  config.data.classes = sources.load(config.data, config.data.train_split).class_names[:2]
  config.augment.flip_prob = 0.5
  config.model.name, config.batch_size = 'resnet18', 16
  return config


RUNS: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]] = {
    'conv4': conv4_config,
    'resnet18': resnet18_config,
}


def short_run(config: ml_collections.ConfigDict, steps: int, epochs: int
              ) -> ml_collections.ConfigDict:
  """`config` as `epochs` epochs of `steps` steps, quiet, without plots."""
  config = config.copy_and_resolve_references()
  config.steps_per_epoch, config.num_epochs = steps, epochs
  config.progress_bar, config.write_plots = False, False
  return config


def rss_megabytes(process) -> float:
  """Resident memory of a psutil `process` and its children (grain workers), in MB."""
  import psutil  # pylint: disable=g-import-not-at-top

  total = 0
  for member in (process, *process.children(recursive=True)):
    with contextlib.suppress(psutil.NoSuchProcess):
      total += member.memory_info().rss
  return total / MEGABYTE


def epochs_written(workdir: str) -> int:
  """How many epoch records `<workdir>/metrics.jsonl` holds (0 before it exists)."""
  with contextlib.suppress(FileNotFoundError), open(
      os.path.join(workdir, writers.METRICS_JSONL)) as file:
    return sum(1 for _ in file)
  return 0


@contextlib.contextmanager
def sampling(workdir: str, every: float = SAMPLE_SECONDS) -> Iterator[list[tuple[int, float]]]:
  """(epochs written, RSS MB) of this process, taken every `every` seconds in a thread
  while the block runs."""
  import psutil  # pylint: disable=g-import-not-at-top

  process, samples, stop = psutil.Process(), [], threading.Event()

  def sample() -> None:
    while not stop.is_set():
      samples.append((epochs_written(workdir), rss_megabytes(process)))
      stop.wait(every)

  thread = threading.Thread(target=sample, daemon=True)
  thread.start()
  try:
    yield samples
  finally:
    stop.set()
    thread.join()


def epoch_rows(samples: Sequence[tuple[int, float]], epochs: int) -> list[dict]:
  """Peak and last RSS of each epoch 1..`epochs`: the samples taken while one epoch fewer
  was written. Samples after the last epoch was written (teardown) are left out."""
  rows = []
  for epoch in range(1, epochs + 1):
    values = [rss for written, rss in samples if written == epoch - 1]
    rows.append({'epoch': epoch, 'peak_rss_mb': round(max(values), 1),
                 'end_rss_mb': round(values[-1], 1)})
  return rows


def train_sampled(config: ml_collections.ConfigDict) -> tuple[list[tuple[int, float]], float]:
  """Trains `config` in a temporary workdir while sampling, tuned as launch.py tunes a run;
  (samples, max RSS in MB)."""
  tuning.apply()
  with tempfile.TemporaryDirectory() as workdir, sampling(workdir) as samples:
    train.train_and_evaluate(config, workdir)
  return samples, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MEGABYTE


def in_fresh_process(fn: Callable, *args):
  """`fn(*args)` run in a new interpreter, so each measurement has its own peak."""
  with concurrent.futures.ProcessPoolExecutor(
      1, mp_context=multiprocessing.get_context('spawn')) as pool:
    return pool.submit(fn, *args).result()


def memory_over_epochs(args: common.Args) -> list[dict]:
  """Per-epoch peak and last RSS of short training runs, and their growth (MB)."""
  locations = args.require_config().data
  rows = []
  for name in args.models or tuple(RUNS):
    config = short_run(RUNS[name](locations), args.batches, args.repeats)
    samples, max_rss = in_fresh_process(train_sampled, config)
    epochs = epoch_rows(samples, args.repeats)
    rows += [{'model': name, 'batch_size': config.batch_size, 'steps': args.batches, **row}
             for row in epochs]
    rows.append({'model': name, 'batch_size': config.batch_size, 'steps': args.batches,
                 'epoch': 'all', 'peak_rss_mb': round(max(r['peak_rss_mb'] for r in epochs), 1),
                 'growth_mb': round(epochs[-1]['end_rss_mb'] - epochs[0]['end_rss_mb'], 1),
                 'max_rss_mb': round(max_rss, 1)})
  return rows
