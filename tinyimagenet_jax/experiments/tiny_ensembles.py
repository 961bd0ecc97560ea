"""Fifth report: M1-M4 on Tiny ImageNet, the best model's classes and first-layer
filters, and ensembles of M3 variants by averaged probabilities.

Runs, each in <workdir>/<run> (resumable; a finished run is read, not retrained):
- one per model of config.ensembles.models (tiny_m1 .. tiny_m4), with the config's
  training (the report's: SGD + Nesterov 0.9, lr 0.01 x0.85 every 10 epochs,
  L2 1e-3, dropout 0.5);
- the members: config.ensembles.member_model trained config.ensembles.member_epochs
  epochs, one member per (seed, learning rate) of config.ensembles.seeds and
  .learning_rates, as one run `members` of stacked models (common.member_runs).

Everything is measured on data.eval_split ('validation' for all 200 classes; the
official test split is unlabelled). The best model is the one with the highest
final top-1 there (the report's M4). Writes:
- models.csv/.md (per model: parameters, epochs, final train accuracy, final top-1
  and top-5, best top-1, seconds per epoch) and models.png (train accuracy and
  top-1 per epoch);
- classwise_{classes.csv,classes.md,confusion.csv,accuracy.png,confusion.png}: the
  best model per class, classes named by their words.txt names where the dataset
  keeps them (Tiny ImageNet), else by its class names;
- filters.png: the best model's first-layer filters;
- predictions_<split>.txt in the best model's run folder, for
  config.ensembles.predict_split (the unlabelled test split): `<file name> <wnid>`
  lines, the course server's format;
- members.csv/.md (per member: seed, learning rate, final top-1 from its history
  and the accuracy of its own probabilities), ensemble_subsets.csv/.md (the
  accuracy of every non-empty subset of members, all C(K, k) for each size k),
  ensemble_sizes.csv/.md (per size: mean, min and max) and ensemble_size.png;
- summary.json/.md: each model's top-1, the best model's best and worst classes,
  the members and the whole ensemble's accuracy.
config.mode='evaluate': each run's newest checkpoint on data.eval_split.
"""

import os

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import evaluation
from tinyimagenet_jax.analysis import classwise, ensembles, filters, tables
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common

OPTIONS = ('models', 'member_model', 'member_epochs', 'seeds', 'learning_rates',
           'predict_split')
MEMBERS = 'members'  # the member runs' name
CLASSWISE = 'classwise'
FILTERS_MIN_WIDTH = 480  # pixels: each filter weight a visible square
CLASSWISE_FILES = ('_classes.csv', '_classes.md', '_confusion.csv', '_accuracy.png',
                   '_confusion.png')


def check_options(config: ml_collections.ConfigDict) -> None:
  """ConfigError for members this experiment cannot pair up or ensemble."""
  common.require_options(config, 'ensembles', OPTIONS)
  options = config.ensembles
  if len(options.seeds) != len(options.learning_rates) or len(options.seeds) < 2:
    raise ConfigError(
        f'config.ensembles.seeds={tuple(options.seeds)!r} and .learning_rates='
        f'{tuple(options.learning_rates)!r} must pair up one seed and one learning rate per'
        ' member, for at least 2 members.')


def model_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """One run per model of config.ensembles.models, named by the model."""
  return {model: common.variant(config, **{'model.name': model})
          for model in config.ensembles.models}


def member_base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """What every member shares: config.ensembles.member_model for member_epochs epochs."""
  options = config.ensembles
  return common.variant(config, **{'model.name': options.member_model,
                                   'num_epochs': options.member_epochs})


def member_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The members' run: K stacked models, one program."""
  return common.member_runs(MEMBERS, member_base(config), config.ensembles.seeds,
                            config.ensembles.learning_rates)


def class_words(source) -> tuple[str, ...]:
  """Readable class names: the first words.txt name each Tiny ImageNet record keeps in
  `class_name` ('school bus'), read until every class is named; else the class names."""
  names = list(source.class_names)
  records = getattr(source, 'records', None)
  if not records or 'class_name' not in records[0]:
    return tuple(names)
  unnamed = set(range(len(names)))
  for index in range(len(records)):
    record = records[index]
    if record['label'] in unnamed:
      words = record['class_name']
      names[record['label']] = (words.decode() if isinstance(words, bytes) else words
                                ).split(',')[0].strip()
      unnamed.discard(record['label'])
    if not unnamed:
      break
  return tuple(names)


def model_row(name: str, run: ml_collections.ConfigDict, history: list[dict]) -> dict:
  """One model's line: final and best top-1 on the eval split, final train accuracy."""
  last, top1 = history[-1], config_lib.eval_metric(run, 'top1')
  return {'model': name, 'parameters': common.parameter_count(run), 'epochs_run': len(history),
          'eval_split': run.data.eval_split, 'final_train_accuracy': last['train_accuracy'],
          'final_top1': last[top1], 'final_top5': last[config_lib.eval_metric(run, 'top5')],
          'best_top1': max(record[top1] for record in history),
          'seconds_per_epoch': float(np.mean([record['seconds'] for record in history]))}


def first_conv_kernel(params) -> np.ndarray:
  """The first layer's (kh, kw, cin, cout) kernel: of the 4-D kernels, the (first) one
  reading the fewest channels, the image's."""
  kernels = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(params))
             if np.ndim(leaf) == 4]
  return min(kernels, key=lambda kernel: kernel.shape[2])


def best_model_reports(run: ml_collections.ConfigDict, run_dir: str, workdir: str
                       ) -> tuple[dict, list[str]]:
  """The best model's per-class report (named classes) and first-layer filters."""
  restored, scores = evaluation.score_saved(run, run_dir)
  source = restored.eval_sources[run.data.eval_split]
  report = classwise.write_classwise_report(scores.labels, scores.probabilities,
                                            class_words(source), workdir, CLASSWISE)
  files = [os.path.join(workdir, CLASSWISE + suffix) for suffix in CLASSWISE_FILES]
  files.append(os.path.join(workdir, 'filters.png'))
  kernel = first_conv_kernel(restored.state.params)
  height, width, _, count = kernel.shape
  filters.write_filter_image(
      kernel, files[-1], min_width=FILTERS_MIN_WIDTH,
      title=f'{run.model.name}: its {count} first-layer filters ({height}x{width})')
  return report, files


def member_probabilities(runs: dict[str, ml_collections.ConfigDict], workdir: str
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(K, N, C) probabilities of every member on the eval split, and the (N,) labels."""
  (name, run), = runs.items()
  _, scores = evaluation.score_saved(run, common.run_dir(workdir, name))
  return scores.probabilities, scores.labels


def member_rows(config: ml_collections.ConfigDict, runs: dict, histories: list[list[dict]],
                probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
  """Per member: its run, seed, learning rate, final top-1 (history) and accuracy
  of its own probabilities (the same number, recomputed)."""
  (name,) = runs
  return [{'member': index, 'run': name, 'seed': seed, 'learning_rate': rate,
           'final_top1': histories[index][-1][config_lib.eval_metric(config, 'top1')],
           'accuracy': ensembles.accuracy(probabilities[index], labels)}
          for index, (seed, rate) in enumerate(zip(config.ensembles.seeds,
                                                   config.ensembles.learning_rates))]


def write_ensembles(probabilities: np.ndarray, labels: np.ndarray, workdir: str
                    ) -> tuple[list[dict], list[str]]:
  """Every subset's accuracy, the per-size summary and the figure; (per-size rows, files)."""
  subsets, sizes = ensembles.accuracy_by_ensemble_size(probabilities, labels)
  rows = [{'size': row['size'], 'members': '+'.join(map(str, row['members'])),
           'accuracy': row['accuracy']} for row in subsets]
  files = list(tables.write_table(rows, os.path.join(workdir, 'ensemble_subsets')))
  files += tables.write_table(sizes, os.path.join(workdir, 'ensemble_sizes'))
  files.append(os.path.join(workdir, 'ensemble_size.png'))
  ensembles.plot_accuracy_by_ensemble_size(
      subsets, files[-1], title=f'{len(probabilities)} members: accuracy vs ensemble size')
  return sizes, files


def summary_lines(summary: dict) -> list[str]:
  """summary.md's lines."""
  best = summary['best_model']
  lines = [f"# M1-M4 and ensembles on {summary['eval_split']}", '']
  lines += [f'- {model}: final top-1 {top1:.4f}' for model, top1 in summary['models'].items()]
  lines.append(f"- best model {best}: best classes " + ', '.join(
      f'{name} {accuracy:.2f}' for name, accuracy in summary['classwise']['best'])
               + '; worst ' + ', '.join(
                   f'{name} {accuracy:.2f}' for name, accuracy in summary['classwise']['worst']))
  ensemble = summary['ensemble']
  lines.append(f"- ensemble of {ensemble['members']} members: {ensemble['accuracy']:.4f}"
               f" (best member {ensemble['best_member_accuracy']:.4f}, {best}"
               f" {summary['models'][best]:.4f})")
  return lines


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the models and the members, then writes every table and figure."""
  check_options(config)
  models, members = model_runs(config), member_runs(config)
  if config.mode == 'evaluate':
    return common.evaluate_runs(models | members, workdir)
  histories = common.train_runs(models, workdir)
  rows = [model_row(name, models[name], history) for name, history in histories.items()]
  files = common.write_comparison(
      rows, histories, os.path.join(workdir, 'models'),
      ('train_accuracy', config_lib.eval_metric(config, 'top1')),
      f'{config.data.name}: train accuracy and {config.data.eval_split} top-1')

  best = max(rows, key=lambda row: row['final_top1'])['model']
  best_dir = common.run_dir(workdir, best)
  report, report_files = best_model_reports(models[best], best_dir, workdir)
  files += report_files
  files.append(evaluation.write_predictions(common.variant(
      models[best], **{'data.eval_split': config.ensembles.predict_split}), best_dir))

  member_histories = common.train_members(MEMBERS, member_base(config), workdir,
                                          config.ensembles.seeds, config.ensembles.learning_rates)
  probabilities, labels = member_probabilities(members, workdir)
  member_table = member_rows(config, members, member_histories, probabilities, labels)
  files += tables.write_table(member_table, os.path.join(workdir, 'members'))
  sizes, ensemble_files = write_ensembles(probabilities, labels, workdir)
  files += ensemble_files
  summary = {'eval_split': config.data.eval_split,
             'models': {row['model']: row['final_top1'] for row in rows}, 'best_model': best,
             'classwise': {key: report[key] for key in ('accuracy', 'macro_f1', 'best', 'worst')},
             'ensemble': {'members': len(probabilities), 'by_size': sizes,
                          'accuracy': ensembles.accuracy(
                              ensembles.ensemble_probabilities(probabilities), labels),
                          'best_member_accuracy': max(row['accuracy'] for row in member_table)}}
  files += common.write_summary(summary, summary_lines(summary), workdir)
  return {'summary': summary, 'files': files}
