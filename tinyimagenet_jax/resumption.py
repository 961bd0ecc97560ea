"""Which config changes a rerun may make and still continue the checkpointed run.

Every config field can change the numbers unless it is on `ALLOWED_CHANGES`:
paths to the same data, worker and thread counts, the progress display, plots,
checkpoint cadence and counts, the evaluation batch size, the compilation cache,
the mode, `restart` itself, and `num_epochs` raised to continue (unless the
learning-rate schedule is shaped by the run's length). A rerun that changes
anything else is refused in one line naming every differing key, so a workdir's
checkpoints, metrics and config.json always describe one run.
"""

import json

import ml_collections

from tinyimagenet_jax.errors import ConfigError

ALLOWED_CHANGES = frozenset({
    # where the same data is found, and how it is read
    'data.root', 'data.data_dir', 'data.manual_dir', 'data.download', 'data.cache_dir',
    'data.decoded_cache', 'data.num_workers', 'data.num_threads', 'data.prefetch_batches',
    'data.device_memory_fraction',
    # what is shown and kept, not what is computed
    'progress_bar', 'progress_seconds', 'write_plots', 'checkpoint_every_steps',
    'checkpoint_min_seconds',
    'max_checkpoints_to_keep', 'keep_best_checkpoints', 'best_metric', 'best_mode',
    'eval_batch_size', 'compilation_cache_dir', 'mode', 'restart',
})
# Schedules whose shape depends on the run's total steps: num_epochs may not change under them.
LENGTH_SHAPED_SCHEDULES = ('cosine', 'onecycle')


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a.b': value} for every leaf of a nested dict, values as JSON reads them back."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = json.loads(json.dumps(value))
  return flat


def epochs_may_rise(saved: dict, now: dict) -> bool:
  """Whether num_epochs went up under a schedule that the run's length does not shape."""
  schedule = saved.get('optimizer.schedule')
  return (schedule == now.get('optimizer.schedule')
          and schedule not in LENGTH_SHAPED_SCHEDULES
          and now.get('num_epochs', 0) >= saved.get('num_epochs', 0))


def differing_keys(saved: dict, current: dict, defaults: dict) -> list[str]:
  """The result-affecting keys where `current` differs from the `saved` config; a key the
  saved config lacks (added to the project since) is compared with its default."""
  saved, now, defaults = flatten(saved), flatten(current), flatten(defaults)
  differing = []
  for key in sorted(set(saved) | set(now)):
    if key in ALLOWED_CHANGES:
      continue
    was = saved.get(key, defaults.get(key))
    if was == now.get(key, defaults.get(key)):
      continue
    if key == 'num_epochs' and epochs_may_rise(saved, now):
      continue
    differing.append(key)
  return differing


def check_resumable(saved: dict, config: ml_collections.ConfigDict,
                    defaults: ml_collections.ConfigDict, workdir: str) -> None:
  """ConfigError, one line naming every differing key with both values, unless `config`
  continues the run whose checkpoint saved `saved`."""
  keys = differing_keys(saved, config.to_dict(), defaults.to_dict())
  if not keys:
    return
  saved_flat, now_flat = flatten(saved), flatten(config.to_dict())
  changes = ', '.join(f'{key} {saved_flat.get(key)!r} -> {now_flat.get(key)!r}'
                      for key in keys)
  raise ConfigError(
      f'the checkpoints in {workdir} were trained with another config ({changes}), so'
      ' resuming would mix two runs; use another --workdir for the new config, or add'
      ' --config.restart=True to start this one over.')
