"""Third report: a linear model, CNNs, ResNet + CNN and VGG16 (transfer learning and
layer-wise fine-tuning) compared on Tiny ImageNet.

Runs, each in <workdir>/<run> (resumable; a finished run is read, not retrained), one
per entry of config.tiny_models.runs (run name -> overrides of the config's sections,
e.g. {'model': {'name': 'cnn2'}}), all with the config's augmentation (flip,
translation, rotation, contrast): by default linear, cnn2, cnn_multi, resnet_cnn
from scratch, vgg16_transfer (every conv block frozen for the whole run: only the
head trains) and vgg16_finetune (the same at first, then the blocks unfrozen one
by one: optimizer.freeze, '<prefix>@<epoch>'). The runs of
config.tiny_models.pretrained_runs start from config.init_from (a Keras VGG16 .h5)
with config.tiny_models.pretrained_data (the weights' input scaling); with
init_from empty they train from scratch, and the table says so. A run with
optimizer.freeze keeps the parameters it starts from (snapshots/epoch_000.npz,
saved before it trains) and snapshots at the epochs its blocks unfreeze.

"val" is data.validation_size images carved from the training split; "test" is
data.eval_split (for all 200 classes the official validation split, since the
official test split is unlabelled).

Writes models.csv/.md (per run: model, initialisation, parameters, freeze schedule,
epochs, the best val top-1 with its epoch's val top-5 and test top-1, the final
train and val accuracy, seconds per epoch), val_accuracy.png (train accuracy and
val top-1 per epoch of every run) and frozen_check.csv/.md (per freeze entry of
every run with one: the epochs its parameters were frozen, whether every array
was bitwise equal to its initial value at the end of that period with the largest
absolute difference, and the largest difference at the end of the run).
config.mode='evaluate': each run's newest checkpoint on data.eval_split.
"""

import math
import os

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import evaluation
from tinyimagenet_jax import optim
from tinyimagenet_jax import snapshots
from tinyimagenet_jax import train
from tinyimagenet_jax.analysis import curves, tables
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common

OPTIONS = ('runs', 'pretrained_runs', 'pretrained_data')
CURVE_KEYS = ('train_accuracy', 'val_top1')


def freeze_ends(run: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The epochs after which some of the run's frozen parameters start training."""
  return tuple(sorted({int(epoch) for _, epoch in optim.parse_freeze(run.optimizer.freeze)
                       if 0 < epoch < math.inf}))


def experiment_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Every run by name: the config with the run's overrides; config.init_from and
  the pretrained input scaling for the pretrained runs only; snapshots where frozen
  parameters unfreeze."""
  options = config.tiny_models
  runs = {}
  for name, overrides in options.runs.items():
    pretrained = bool(config.init_from) and name in options.pretrained_runs
    run = common.variant(config, overrides,
                         init_from=config.init_from if pretrained else '')
    if pretrained:
      run = common.variant(run, {'data': options.pretrained_data})
    runs[name] = common.variant(run, snapshot_epochs=freeze_ends(run))
  return runs


def named_arrays(params) -> dict[str, np.ndarray]:
  """Every parameter array by the '/'-joined path that freeze prefixes match."""
  return {optim.path_name(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def save_initial_snapshot(run: ml_collections.ConfigDict, run_dir: str) -> None:
  """Keeps the parameters the run starts from (its initialisation merged with init_from,
  as train_and_evaluate builds them, on this machine) as the snapshot of epoch 0, once."""
  if os.path.exists(snapshots.snapshot_path(run_dir, 0)):
    return
  state = common.initial_state(run)
  if run.init_from:
    state = train.initialise_from(state, run.init_from)
  snapshots.save_if_chosen(state, 0, (0,), run_dir)


def max_abs_difference(now: dict[str, np.ndarray], before: dict[str, np.ndarray],
                       names: list[str]) -> float:
  """The largest |now - before| over the arrays `names` (float64)."""
  return max((float(np.max(np.abs(now[name].astype(np.float64) - before[name])))
              for name in names), default=0.0)


def bitwise_equal(now: dict[str, np.ndarray], before: dict[str, np.ndarray],
                  names: list[str]) -> bool:
  """Whether each array `names` has the same dtype, shape and bytes in both."""
  return all(now[name].dtype == before[name].dtype and now[name].shape == before[name].shape
             and now[name].tobytes() == before[name].tobytes() for name in names)


def params_after(epoch: int, final: dict, run_dir: str, epochs_run: int) -> dict:
  """The parameters after `epoch` epochs: a snapshot (0: the initial ones) or the final ones."""
  if epoch >= epochs_run:
    return final
  return named_arrays(snapshots.load_snapshot(run_dir, epoch)['params'])


def frozen_rows(name: str, run: ml_collections.ConfigDict, run_dir: str, epochs_run: int
                ) -> list[dict]:
  """Per freeze entry of a run: its arrays compared with their initial values at the
  end of their frozen period (which optim.frozen_until gives each array) and at the end."""
  entries = optim.parse_freeze(run.optimizer.freeze)
  final = named_arrays(evaluation.restore(run, run_dir).state.params)
  initial = params_after(0, final, run_dir, epochs_run)
  rows = []
  for text, (prefix, epoch) in zip(run.optimizer.freeze, entries):
    names = [array for array in initial if array.startswith(prefix)]
    frozen_for = min(epoch, epochs_run)
    ends = {array: int(min(optim.frozen_until(array, entries, 1), epochs_run)) for array in names}
    at_end = {end: params_after(end, final, run_dir, epochs_run) for end in set(ends.values())}
    mine = {array: at_end[ends[array]][array] for array in names}
    rows.append({'run': name, 'entry': text, 'prefix': prefix, 'arrays': len(names),
                 'frozen_epochs': int(frozen_for), 'bitwise_equal_while_frozen':
                 bitwise_equal(mine, initial, names),
                 'max_abs_diff_while_frozen': max_abs_difference(mine, initial, names),
                 'trained_epochs': int(epochs_run - frozen_for),
                 'max_abs_diff_at_end': max_abs_difference(final, initial, names)})
  return rows


def run_row(name: str, run: ml_collections.ConfigDict, history: list[dict]) -> dict:
  """One line of the comparison: the best val epoch (the first best) and the final one."""
  best, last = max(history, key=lambda record: record['val_top1']), history[-1]
  return {'run': name, 'model': run.model.name,
          'initialised_from': run.init_from or 'scratch',
          'parameters': common.parameter_count(run), 'freeze': ' '.join(run.optimizer.freeze),
          'epochs_run': len(history), 'best_val_epoch': best['epoch'],
          'best_val_top1': best['val_top1'], 'best_val_top5': best['val_top5'],
          f'{run.data.eval_split}_top1': best[config_lib.eval_metric(run, 'top1')],
          'final_train_accuracy': last['train_accuracy'],
          'final_val_top1': last['val_top1'],
          'seconds_per_epoch': float(np.mean([record['seconds'] for record in history]))}


def check_options(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a comparison this experiment cannot make."""
  common.require_options(config, 'tiny_models', OPTIONS)
  if not config.data.validation_size:
    raise ConfigError('config.data.validation_size=0 leaves no validation split; experiment'
                      " 'tiny_models' picks each run's best epoch on one, e.g. 10000.")
  unknown = sorted(set(config.tiny_models.pretrained_runs) - set(config.tiny_models.runs))
  if unknown:
    raise ConfigError(f'config.tiny_models.pretrained_runs names {unknown[0]!r}, which is not'
                      ' a run of config.tiny_models.runs; name one of: '
                      + ', '.join(config.tiny_models.runs))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) every run, then writes the comparison and the frozen check."""
  check_options(config)
  runs = experiment_runs(config)
  if config.mode == 'evaluate':
    return common.evaluate_runs(runs, workdir)
  for name, run_config in runs.items():
    if run_config.optimizer.freeze:
      save_initial_snapshot(run_config, common.run_dir(workdir, name))
  histories = common.train_runs(runs, workdir)
  rows = [run_row(name, runs[name], history) for name, history in histories.items()]
  files = list(tables.write_table(rows, os.path.join(workdir, 'models')))
  files.append(os.path.join(workdir, 'val_accuracy.png'))
  curves.plot_runs(histories, CURVE_KEYS, files[-1],
                   title=f'{config.data.name}: train accuracy and val top-1 per epoch')
  frozen = [row for name, run_config in runs.items() if run_config.optimizer.freeze
            for row in frozen_rows(name, run_config, common.run_dir(workdir, name),
                                   len(histories[name]))]
  if frozen:
    files += tables.write_table(frozen, os.path.join(workdir, 'frozen_check'))
  return {'rows': rows, 'frozen_check': frozen, 'files': files}
