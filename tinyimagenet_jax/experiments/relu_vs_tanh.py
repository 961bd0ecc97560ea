"""First report (Krizhevsky et al. 2012, Figure 1): ReLU vs tanh in conv4 on CIFAR-10.

For each activation, a sweep over `config.sweep.<activation>` learning rates;
each run stops at `target_train_error` (or the epoch cap). The learning rate
reaching the target in the fewest epochs is chosen per activation (ties: the
lower training error then). With `sweep.prune`, a later candidate is capped at
the best epoch count so far, since it can only tie or win within that many.
The candidates train one after another on every backend: each stops at its own
target or cap, and the report's seconds per epoch are one model's.

Writes: runs.csv/.md (every run), training_error.png (train error vs epoch,
the chosen runs bold), seconds_per_epoch.png, summary.json/.md (the chosen
learning rates, their epochs and the epochs ratio tanh/ReLU).
"""

import os

import ml_collections
import numpy as np

from tinyimagenet_jax.analysis import curves, tables
from tinyimagenet_jax.experiments import common

ACTIVATIONS = ('relu', 'tanh')


def run_name(activation: str, learning_rate: float) -> str:
  """e.g. relu_lr0.2."""
  return f'{activation}_lr{learning_rate:g}'


def activation_config(config: ml_collections.ConfigDict, activation: str
                      ) -> ml_collections.ConfigDict:
  """The base run of one activation."""
  return common.variant(config, **{'model.activation': activation})


def candidate_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Every run folder of the sweep with its config (uncapped)."""
  runs = {}
  for activation in ACTIVATIONS:
    base = activation_config(config, activation)
    runs.update({run_name(activation, rate): common.variant(
        base, **{'optimizer.learning_rate': rate}) for rate in config.sweep[activation]})
  return runs


def sweep_activation(config: ml_collections.ConfigDict, activation: str, workdir: str
                     ) -> dict[str, list[dict]]:
  """The histories of one activation's candidate runs, by run name."""
  base = activation_config(config, activation)
  histories, cap = {}, config.num_epochs
  before = ACTIVATIONS[:ACTIVATIONS.index(activation)]
  first = sum(len(config.sweep[other]) for other in before)
  total = sum(len(config.sweep[other]) for other in ACTIVATIONS)
  for index, rate in enumerate(config.sweep[activation]):
    name = run_name(activation, rate)
    run = common.variant(base, **{'optimizer.learning_rate': rate, 'num_epochs': cap})
    histories.update(common.train_runs({name: run}, workdir, first + index, total))
    reached = common.first_epoch_at_or_below(histories[name], 'train_error',
                                             config.target_train_error)
    if config.sweep.prune and reached is not None:
      cap = min(cap, reached)
  return histories


def run_row(name: str, activation: str, rate: float, history: list[dict], target: float) -> dict:
  """One line of the runs table."""
  reached = common.first_epoch_at_or_below(history, 'train_error', target)
  return {'run': name, 'activation': activation, 'learning_rate': rate,
          'epochs_run': len(history), 'epochs_to_target': reached or '',
          'final_train_error': history[-1]['train_error'],
          'final_test_top1': history[-1].get('test_top1', float('nan')),
          'seconds_per_epoch': float(np.mean([r['seconds'] for r in history]))}


def choose(rows: list[dict]) -> dict:
  """The fastest run to the target (fewest epochs, then lower error); if none
  reached it, the lowest final training error."""
  reached = [row for row in rows if row['epochs_to_target'] != '']
  if reached:
    return min(reached, key=lambda row: (row['epochs_to_target'], row['final_train_error']))
  return min(rows, key=lambda row: row['final_train_error'])


def summarize(rows: list[dict], target: float) -> dict:
  """The chosen run per activation and the tanh/ReLU epochs ratio."""
  chosen = {activation: choose([r for r in rows if r['activation'] == activation])
            for activation in ACTIVATIONS}
  epochs = {a: chosen[a]['epochs_to_target'] or None for a in ACTIVATIONS}
  ratio = epochs['tanh'] / epochs['relu'] if all(epochs.values()) else None
  return {'target_train_error': target,
          'chosen': {a: {key: chosen[a][key] for key in
                         ('run', 'learning_rate', 'epochs_run', 'epochs_to_target',
                          'final_train_error', 'seconds_per_epoch')} for a in ACTIVATIONS},
          'epochs_ratio_tanh_over_relu': ratio,
          'relu_reached_target_first': (ratio > 1) if ratio is not None else None}


def summary_lines(summary: dict) -> list[str]:
  """summary.md's lines."""
  ratio = summary['epochs_ratio_tanh_over_relu']
  lines = [f"# ReLU vs tanh: epochs to {summary['target_train_error']:.0%} training error", '']
  for activation, chosen in summary['chosen'].items():
    reached = (f"reached the target in {chosen['epochs_to_target']} epochs"
               if chosen['epochs_to_target'] else
               f"did not reach the target in {chosen['epochs_run']} epochs")
    lines.append(f"- {activation}: learning rate {chosen['learning_rate']:g} {reached},"
                 f" {chosen['seconds_per_epoch']:.1f} s per epoch")
  lines.append(f'- epochs ratio tanh/ReLU: {ratio:.2f}' if ratio is not None else
               '- epochs ratio tanh/ReLU: not defined (a chosen run missed the target)')
  return lines


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the sweep, then writes the tables and figures."""
  common.require_options(config, 'sweep', ('relu', 'tanh', 'prune'))
  if config.mode == 'evaluate':
    return common.evaluate_runs(candidate_runs(config), workdir)
  target = config.target_train_error
  histories, rows = {}, []
  for activation in ACTIVATIONS:
    found = sweep_activation(config, activation, workdir)
    histories.update(found)
    rows += [run_row(run_name(activation, rate), activation, rate,
                     found[run_name(activation, rate)], target)
             for rate in config.sweep[activation]]
  summary = summarize(rows, target)
  chosen = tuple(summary['chosen'][a]['run'] for a in ACTIVATIONS)
  files = list(tables.write_table(rows, os.path.join(workdir, 'runs')))
  files.append(os.path.join(workdir, 'training_error.png'))
  curves.plot_runs(histories, ('train_error',), files[-1], highlight=chosen, target=target,
                   title=f'conv4 on {config.data.name}: training error (chosen runs bold)')
  files.append(os.path.join(workdir, 'seconds_per_epoch.png'))
  curves.plot_runs({name: histories[name] for name in chosen}, ('seconds',), files[-1],
                   title='time per epoch of the chosen runs')
  files += common.write_summary(summary, summary_lines(summary), workdir)
  return {'summary': summary, 'files': files}
