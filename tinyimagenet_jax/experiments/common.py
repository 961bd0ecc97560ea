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

from tinyimagenet_jax import evaluation
from tinyimagenet_jax import members
from tinyimagenet_jax import models
from tinyimagenet_jax import train
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.state import TrainState


def variant(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """A copy of `config` as one plain run, with dotted-key overrides applied
  (`variant(c, **{'model.dropout': 0.5})`)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.experiment = ''
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    parent = copy
    for part in filter(None, section.split('.')):
      parent = parent[part]
    if field not in parent:
      with parent.unlocked():
        parent[field] = value
    else:
      parent[field] = value
  return copy


def dotted(section: ml_collections.ConfigDict, prefix: str = '') -> dict:
  """A nested section of overrides as `variant`'s dotted keys:
  {'optimizer': {'learning_rate': 0.1}} -> {'optimizer.learning_rate': 0.1}."""
  keys = {}
  for key, value in section.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      keys.update(dotted(value, f'{prefix}{key}.'))
    else:
      keys[f'{prefix}{key}'] = value
  return keys


def train_runs(runs: dict[str, ml_collections.ConfigDict], workdir: str) -> dict[str, list]:
  """Trains (or resumes, or just reads) every run; returns each run's history."""
  histories = {}
  for index, (name, config) in enumerate(runs.items()):
    tqdm.tqdm.write(f'[run {index + 1}/{len(runs)}] {name}')
    _, histories[name] = train.train_and_evaluate(config, run_dir(workdir, name))
  return histories


def run_dir(workdir: str, name: str) -> str:
  """The folder of run `name` of an experiment."""
  return os.path.join(workdir, name)


def member_runs(name: str, config: ml_collections.ConfigDict, seeds: Sequence[int] = (),
                learning_rates: Sequence[float] = ()) -> dict[str, ml_collections.ConfigDict]:
  """The runs of K models differing in seed and/or learning rate: one vmapped run
  `name` when `members.use_vmap(config)`, else K runs `<name>_member<i>`."""
  count = max(len(seeds), len(learning_rates))
  seeds = list(seeds) or [config.seed + index for index in range(count)]
  rates = list(learning_rates) or [config.optimizer.learning_rate] * count
  if members.use_vmap(config):
    return {name: variant(config, **{'members.seeds': tuple(seeds),
                                     'members.learning_rates': tuple(rates)})}
  return {member_run_name(name, index): variant(
      config, **{'members.seeds': (seed,), 'optimizer.learning_rate': rate})
          for index, (seed, rate) in enumerate(zip(seeds, rates))}


def train_members(name: str, config: ml_collections.ConfigDict, workdir: str,
                  seeds: Sequence[int] = (), learning_rates: Sequence[float] = ()
                  ) -> list[list[dict]]:
  """Trains the `member_runs`; each member's history."""
  runs = member_runs(name, config, seeds, learning_rates)
  histories = list(train_runs(runs, workdir).values())
  if members.use_vmap(config):
    return [members.member_history(histories[0], index)
            for index in range(members.member_count(runs[name]))]
  return histories


def member_run_name(name: str, index: int) -> str:
  """The run folder of member `index` when members are trained one after another."""
  return f'{name}_member{index}'


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
  source = sources.load(config.data, config.data.train_split)
  _, eval_transform = transforms.make_preprocess(config)
  model = models.build_model(config.model, len(source.class_names))
  steps_per_epoch = train.resolve_steps_per_epoch(config, len(source))
  state, _, _ = train.initial_state(config, model, steps_per_epoch,
                                    eval_transform(source[0])['image'].shape)
  return state


def parameter_count(config: ml_collections.ConfigDict) -> int:
  """How many trainable numbers one model of `config` has (from shapes: nothing computed)."""
  params = jax.eval_shape(lambda: initial_state(config).params)
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
  return config


def write_summary(summary: dict, lines: list[str], workdir: str) -> list[str]:
  """An experiment's headline numbers: summary.json (all of `summary`) and
  summary.md (the Markdown `lines`)."""
  json_path, md_path = os.path.join(workdir, 'summary.json'), os.path.join(workdir, 'summary.md')
  with open(json_path, 'w') as file:
    json.dump(summary, file, indent=2)
  with open(md_path, 'w') as file:
    file.write('\n'.join(lines) + '\n')
  return [json_path, md_path]

