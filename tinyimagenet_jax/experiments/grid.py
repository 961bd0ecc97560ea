"""A grid sweep over any config keys, ranked by a validation metric.

    python launch.py --config=configs/<any>.py --config.experiment=grid \
        --config.grid="('optimizer.learning_rate=0.01,0.05', 'optimizer.l2=0,0.001')"

Every combination is one run in `<workdir>/<key=value,...>` (resumable; a
finished run is read, not retrained). Ranked by the best `grid_metric` over
each run's epochs (`grid_mode` 'max' or 'min'); writes grid.csv/.md (one row
per run, best first) and grid.png (the metric per epoch of every run). The
fifth report chose its hyperparameters this way (with cross-validation).
"""

import ast
import itertools
import os

import ml_collections

from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common


def parse_value(text: str):
  """A Python literal (number, bool, tuple, quoted string), else the bare string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_axis(entry: str) -> tuple[str, list]:
  """'key=v1,v2' -> ('key', [v1, v2])."""
  key, equals, values = entry.partition('=')
  if not (equals and key.strip() and values.strip()):
    raise ConfigError(f"config.grid entry {entry!r} must be 'key=value1,value2,...', e.g."
                      " 'optimizer.learning_rate=0.01,0.05'.")
  return key.strip(), [parse_value(value.strip()) for value in values.split(',')]


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
  """ConfigError unless `key` names an existing config field."""
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f'config.grid key {key!r} names no config field; fix the name (the'
                        ' config file and tinyimagenet_jax/config.py list the fields).')
    node = node[part]


def grid_runs(config: ml_collections.ConfigDict) -> dict[str, tuple[dict, ml_collections.ConfigDict]]:
  """Every combination of the grid: run name -> (its settings, its config)."""
  if not config.grid:
    raise ConfigError("config.grid is empty; give 'key=value1,value2' entries, e.g."
                      " --config.grid=\"('optimizer.learning_rate=0.01,0.05',)\".")
  axes = [parse_axis(entry) for entry in config.grid]
  for key, _ in axes:
    check_key(config, key)
  runs = {}
  for values in itertools.product(*(values for _, values in axes)):
    settings = dict(zip((key for key, _ in axes), values))
    name = ','.join(f'{key.rsplit(".", 1)[-1]}={value}' for key, value in settings.items())
    try:
      runs[name] = (settings, common.variant(config, **settings))
    except TypeError as error:
      raise ConfigError(f'config.grid value in {name!r} does not fit its field ({error});'
                        ' give a value of the field\'s type.') from error
  return runs


def best_epoch(history: list[dict], metric: str, mode: str) -> dict:
  """The epoch record with the best `metric`."""
  if metric not in history[-1]:
    raise ConfigError(f'config.grid_metric={metric!r} is not in the runs\' metrics (they have'
                      f' {", ".join(k for k in history[-1] if k != "members")}); use a'
                      ' validation split (--config.data.validation_size) or another metric.')
  pick = max if mode == 'max' else min
  return pick(history, key=lambda record: record[metric])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every combination, then ranks them."""
  runs = grid_runs(config)
  if config.mode == 'evaluate':
    return common.evaluate_runs({name: run_config for name, (_, run_config) in runs.items()},
                                workdir)
  histories = common.train_runs({name: run_config for name, (_, run_config) in runs.items()},
                                workdir)
  rows = []
  for name, (settings, _) in runs.items():
    best = best_epoch(histories[name], config.grid_metric, config.grid_mode)
    rows.append({'run': name, **settings, config.grid_metric: best[config.grid_metric],
                 'best_epoch': best['epoch'], 'epochs_run': len(histories[name])})
  rows.sort(key=lambda row: row[config.grid_metric], reverse=config.grid_mode == 'max')
  for rank, row in enumerate(rows, 1):
    row['rank'] = rank
  files = common.write_comparison(rows, histories, os.path.join(workdir, 'grid'),
                                  (config.grid_metric,), f'grid over {len(rows)} runs (best bold)',
                                  highlight=(rows[0]['run'],))
  return {'rows': rows, 'files': files}
