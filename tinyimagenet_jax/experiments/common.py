"""What every experiment shares: variants of a config, their runs, their results.

An experiment is a set of named runs, each an ordinary `train_and_evaluate`
in `<workdir>/<run name>` (so each resumes after a crash, and a finished run
is not trained again), followed by figures and tables over their histories.
"""

from collections.abc import Sequence
import math
import json
import os

import jax
import ml_collections
import tqdm

from tinyimagenet_jax import atomic
from tinyimagenet_jax import build
from tinyimagenet_jax import evaluation
from tinyimagenet_jax import members
from tinyimagenet_jax import train
from tinyimagenet_jax.analysis import curves, tables
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.state import TrainState


def variant(config: ml_collections.ConfigDict, *sections: dict,
            **overrides) -> ml_collections.ConfigDict:
  """A copy of `config` as one plain run, updated by nested `sections`
  (`{'model': {'dropout': 0.5}}`), then by dotted-key `overrides`
  (`**{'model.dropout': 0.5}`): ConfigDict's own updates, which may add fields."""
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.experiment = ''
  for section in sections:
    copy.update(section)
  copy.update_from_flattened_dict(overrides)
  return copy


def train_runs(runs: dict[str, ml_collections.ConfigDict], workdir: str, first: int = 0,
               total: int = 0) -> dict[str, list]:
  """Trains (or resumes, or just reads) every run; returns each run's history. Runs are
  announced as `[run <first + i + 1>/<total or len(runs)>]` (an experiment that trains its
  runs a few at a time numbers them across the whole)."""
  histories = {}
  for index, (name, config) in enumerate(runs.items()):
    tqdm.tqdm.write(f'[run {first + index + 1}/{total or len(runs)}] {name}')
    _, histories[name] = train.train_and_evaluate(config, run_dir(workdir, name))
  return histories


def run_dir(workdir: str, name: str) -> str:
  """The folder of run `name` of an experiment."""
  return os.path.join(workdir, name)


def member_runs(name: str, config: ml_collections.ConfigDict, seeds: Sequence[int] = (),
                learning_rates: Sequence[float] = ()) -> dict[str, ml_collections.ConfigDict]:
  """The run `name` of K models differing in seed and/or learning rate: one program on
  every backend (`members`), so its folder is the same wherever it trains."""
  count = max(len(seeds), len(learning_rates))
  return {name: variant(config, **{
      'members.seeds': tuple(seeds) or tuple(config.seed + index for index in range(count)),
      'members.learning_rates': tuple(learning_rates) or (config.optimizer.learning_rate,) * count})}


def train_members(name: str, config: ml_collections.ConfigDict, workdir: str,
                  seeds: Sequence[int] = (), learning_rates: Sequence[float] = ()
                  ) -> list[list[dict]]:
  """Trains the `member_runs`; each member's history."""
  runs = member_runs(name, config, seeds, learning_rates)
  history = train_runs(runs, workdir)[name]
  return members.member_histories(history, members.member_count(runs[name]))


def first_epoch_at_or_below(history: list[dict], key: str, target: float) -> int | None:
  """The first epoch whose `key` is <= `target`, or None if none is."""
  return next((record['epoch'] for record in history if record[key] <= target), None)


def evaluate_runs(runs: dict[str, ml_collections.ConfigDict], workdir: str) -> dict[str, dict]:
  """`--config.mode=evaluate` for an experiment: each run's newest checkpoint."""
  return {name: evaluation.evaluate_saved(config, run_dir(workdir, name))
          for name, config in runs.items()}


def initial_state(config: ml_collections.ConfigDict) -> TrainState:
  """The state a run of `config` starts from (its seeds' initialisation, before
  init_from), as train_and_evaluate builds it: bit for bit the same parameters."""
  return build.build(config).state


def parameter_count(config: ml_collections.ConfigDict) -> int:
  """How many trainable numbers one model of `config` has (from shapes: nothing computed)."""
  params = build.build(config, 'evaluate').state.params
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)) // members.member_count(
      config)


def require_options(config: ml_collections.ConfigDict, section: str, keys: Sequence[str]) -> None:
  """ConfigError when the experiment's own section lacks a key it reads."""
  missing = [key for key in keys if key not in config.get(section, {})]
  if missing:
    raise ConfigError(f'config.{section}.{missing[0]} is missing; experiment'
                      f' {config.experiment!r} needs config.{section} with: {", ".join(keys)}.')


def smoke(config: ml_collections.ConfigDict, steps: int = 3, epochs: int = 2,
          image_size: int = 0) -> ml_collections.ConfigDict:
  """`config` shrunk to run end to end in seconds on real images that are always
  here (scikit-learn's digits, resized to `image_size` when a model needs more
  than 8x8): the smoke mode of every experiment (`configs/<name>.py:smoke`)."""
  config.data.name = 'digits'
  config.data.train_split, config.data.eval_split = 'train', 'test'
  config.data.resize_shorter = config.data.crop_size = image_size
  config.data.mean, config.data.std = (), ()
  config.data.num_workers = 0
  config.batch_size, config.eval_batch_size = 32, 120
  config.steps_per_epoch, config.num_epochs = steps, epochs
  config.progress_bar = False
  config.write_plots = False  # the runs' own curves; the experiment's figures stay
  config.quick_compile = True  # a few steps: compiling is most of the wall
  return config


def write_comparison(rows: list[dict], histories: dict[str, list[dict]], path: str,
                     keys: tuple[str, ...], title: str, **plot_options) -> list[str]:
  """`<path>.csv/.md` from `rows` and `<path>.png`: the runs' `keys` per epoch side by side."""
  files = [*tables.write_table(rows, path), path + '.png']
  curves.plot_runs(histories, keys, files[-1], title=title, **plot_options)
  return files


def write_summary(summary: dict, lines: list[str], workdir: str) -> list[str]:
  """An experiment's headline numbers: summary.json (all of `summary`) and
  summary.md (the Markdown `lines`)."""
  json_path, md_path = os.path.join(workdir, 'summary.json'), os.path.join(workdir, 'summary.md')
  atomic.write_text(json_path, json.dumps(summary, indent=2))
  atomic.write_text(md_path, '\n'.join(lines) + '\n')
  return [json_path, md_path]

