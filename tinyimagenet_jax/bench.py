"""Benchmarks (not tests): print a table of measured figures and write it as JSON.

    python -m tinyimagenet_jax.bench --config=configs/<x>.py [--config.<field>=...] \
        --what=pipeline --batches=100 [--json=results.json]

`pipeline`: images/s of the config's grain training pipeline (decode,
preprocess, augment, batch), read from the training split with the config's
threads and worker processes, after `--warmup` batches.
"""

from collections.abc import Callable
import json
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from tinyimagenet_jax.data import batch_ops, pipeline, sources, transforms


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


BENCHMARKS: dict[str, Callable[[ml_collections.ConfigDict, int, int], dict]] = {
    'pipeline': pipeline_throughput,
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
