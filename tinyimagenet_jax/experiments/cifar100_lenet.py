"""Fourth report: a 2-layer perceptron vs LeNet-5 on CIFAR-100, then LeNet-5 on 5 STL-10 classes.

Runs, each in <workdir>/<run> (resumable; a finished run is read, not retrained):
- baseline_<model> for each model of config.study.models ('mlp': the 2LP,
  'lenet5'): the report's baseline, config.study.seeds seeds each as one run of
  stacked members (common.member_runs);
- exp1_<model>: experiment 1, the same architectures with config.study.tuned
  (OneCycle, gradient clipping, weight decay, the report's transforms) and the
  model's own OneCycle rates, config.study.onecycle.<model>;
- exp2_<model>: experiment 2, config.study.exp2_models (3LP + dropout, LeNet +
  FC + batch norm) trained as in experiment 1;
- stl5_transfer: the best LeNet of experiments 1 and 2, trained on with
  config.transfer (5 STL-10 classes), starting from every parameter whose name
  and shape match (all but the new 5-way head); stl5_scratch: the same from a
  random initialisation, to show what the CIFAR-100 weights are worth.
"Best" is the highest final val_top1 when there is a validation split
(data.validation_size), else the final test_top1, as the report chose.

Writes baseline.csv/.md (per model over its seeds: mean, std (ddof 1), min and
max of the final test accuracy, mean final train accuracy and loss: Table 1),
baseline.png (mean +- std per epoch), experiments.csv/.md and experiments.png
(learning rate, loss and test accuracy per epoch of experiments 1 and 2),
classwise_<model>_{classes.csv,classes.md,confusion.csv,accuracy.png,confusion.png}
(the best run of each model on the test split: per-class accuracy, precision,
recall and F1, confusion matrix), classwise_comparison.png (per-class test
accuracy, LeNet vs MLP: Figure 14), transfer.csv/.md/.png and summary.json/.md.
config.mode='evaluate': each run's newest checkpoint on data.eval_split.
"""

import os

import ml_collections
import numpy as np

from tinyimagenet_jax import evaluation
from tinyimagenet_jax import writers
from tinyimagenet_jax.analysis import classwise, curves, tables
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common

LENET = 'lenet5'  # the model key whose best run is transferred
STAGES = ('exp1', 'exp2')
OPTIONS = ('seeds', 'models', 'exp2_models', 'onecycle', 'tuned')
BASELINE_KEYS = ('train_accuracy', 'train_loss', 'test_top1')
EXPERIMENT_KEYS = ('learning_rate', 'train_loss', 'test_top1')
CLASSWISE_FILES = ('_classes.csv', '_classes.md', '_confusion.csv', '_accuracy.png',
                   '_confusion.png')
TRANSFER, SCRATCH = 'stl5_transfer', 'stl5_scratch'


def check_study(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a study this experiment cannot run."""
  common.require_options(config, 'study', OPTIONS)
  common.require_options(config, 'transfer', ('data',))
  study = config.study
  if study.seeds < 2:
    raise ConfigError(f'config.study.seeds={study.seeds!r} must be at least 2, so the'
                      ' baseline has a spread over seeds.')
  models = set(study.models)
  if LENET not in models or set(study.exp2_models) != models or set(study.onecycle) != models:
    raise ConfigError(
        f'config.study.models, exp2_models and onecycle must name the same models, among'
        f' them {LENET!r}; they name {sorted(study.models)}, {sorted(study.exp2_models)} and'
        f' {sorted(study.onecycle)}.')


def baseline_config(config: ml_collections.ConfigDict, model: str) -> ml_collections.ConfigDict:
  """The report's baseline training of one model of config.study.models."""
  return common.variant(config, {'model': config.study.models[model]})


def baseline_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """config.study.seeds seeds from config.seed on."""
  return tuple(range(config.seed, config.seed + config.study.seeds))


def tuned_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Experiments 1 and 2: each architecture with the shared tuned settings and its
  model's OneCycle rates."""
  study = config.study
  runs = {}
  for stage, architectures in zip(STAGES, (study.models, study.exp2_models)):
    for model, architecture in architectures.items():
      runs[f'{stage}_{model}'] = common.variant(
          config, study.tuned, {'optimizer': study.onecycle[model]}, {'model': architecture})
  return runs


def transfer_runs(config: ml_collections.ConfigDict, source: ml_collections.ConfigDict,
                  source_dir: str) -> dict[str, ml_collections.ConfigDict]:
  """The source run's setup with config.transfer: from its weights, and from scratch."""
  scratch = common.variant(source, config.transfer)
  return {TRANSFER: common.variant(scratch, init_from=source_dir), SCRATCH: scratch}


def selection_metric(history: list[dict]) -> str:
  """val_top1 when the run has a validation split, else test_top1 (the report's choice)."""
  return 'val_top1' if 'val_top1' in history[-1] else 'test_top1'


def best_run(histories: dict[str, list[dict]], model: str) -> str:
  """The experiment 1 or 2 run of `model` with the highest final selection metric."""
  names = [f'{stage}_{model}' for stage in STAGES]
  return max(names, key=lambda name: histories[name][-1][selection_metric(histories[name])])


def seed_row(model: str, histories: list[list[dict]]) -> dict:
  """One model's baseline over its seeds: the final test accuracy's mean, std (ddof 1),
  min and max; the mean final train accuracy and loss."""
  final = np.asarray([history[-1]['test_top1'] for history in histories])
  return {'model': model, 'seeds': len(histories), 'test_top1_mean': float(final.mean()),
          'test_top1_std': float(final.std(ddof=1)), 'test_top1_min': float(final.min()),
          'test_top1_max': float(final.max()),
          'train_accuracy_mean': float(np.mean([h[-1]['train_accuracy'] for h in histories])),
          'train_loss_mean': float(np.mean([h[-1]['train_loss'] for h in histories]))}


def run_row(name: str, config: ml_collections.ConfigDict, history: list[dict]) -> dict:
  """One run's line: its model, epochs, final train loss and accuracy, final and best
  test accuracy (and final validation accuracy when there is a validation split)."""
  last = history[-1]
  row = {'run': name, 'model': ' '.join(f'{key}={value}' for key, value in config.model.items()),
         'initialised_from': config.init_from, 'epochs_run': len(history),
         'final_train_loss': last['train_loss'], 'final_train_accuracy': last['train_accuracy'],
         'final_test_top1': last['test_top1'],
         'best_test_top1': max(record['test_top1'] for record in history)}
  if 'val_top1' in last:
    row['final_val_top1'] = last['val_top1']
  return row


def test_predictions(config: ml_collections.ConfigDict, run_dir: str
                     ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(probabilities, labels, class names) of a run's newest checkpoint on the test split."""
  run, scores = evaluation.score_saved(config, run_dir)
  return scores.probabilities, scores.labels, run.class_names


def classwise_reports(runs: dict[str, ml_collections.ConfigDict], best: dict[str, str],
                      workdir: str) -> tuple[dict, list[str]]:
  """Each model's best run on the test split: write_classwise_report as
  classwise_<model>_*, and classwise_comparison.png; returns (summaries, files)."""
  summaries, accuracies, files = {}, {}, []
  for model, name in best.items():
    probabilities, labels, class_names = test_predictions(runs[name],
                                                          common.run_dir(workdir, name))
    prefix = f'classwise_{model}'
    summaries[model] = {'run': name, **classwise.write_classwise_report(
        labels, probabilities, class_names, workdir, prefix)}
    files += [os.path.join(workdir, prefix + suffix) for suffix in CLASSWISE_FILES]
    accuracies[name] = classwise.per_class_accuracy(classwise.confusion_matrix(
        labels, classwise.as_predictions(probabilities), len(class_names)))
  files.append(os.path.join(workdir, 'classwise_comparison.png'))
  classwise.plot_classwise_accuracy(accuracies, class_names, files[-1],
                                    title='per-class test accuracy of the best runs')
  return summaries, files


def summary_lines(summary: dict) -> list[str]:
  """summary.md's lines."""
  transfer = summary['transfer']
  lines = [f"# 2LP vs LeNet-5 on {summary['data']}, then LeNet-5 on {len(transfer['classes'])}"
           f" classes of {transfer['data']}", '']
  for row in summary['baseline']:
    lines.append(f"- baseline {row['model']}: test accuracy {row['test_top1_mean']:.4f}"
                 f" +- {row['test_top1_std']:.4f} over {row['seeds']} seeds"
                 f" (min {row['test_top1_min']:.4f}, max {row['test_top1_max']:.4f})")
  for name, accuracy in summary['experiments'].items():
    lines.append(f'- {name}: final test accuracy {accuracy:.4f}')
  for model, report in summary['classwise'].items():
    lines.append(f"- best {model}: {report['run']} (by final {summary['selected_by']}), test"
                 f" accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}")
  lines.append(f"- {transfer['data']} {', '.join(transfer['classes'])}: final test accuracy"
               f" {transfer[TRANSFER]:.4f} from {transfer['source']}, {transfer[SCRATCH]:.4f}"
               ' from scratch')
  return lines


def evaluate_all(config: ml_collections.ConfigDict, tuned: dict[str, ml_collections.ConfigDict],
                 workdir: str) -> dict[str, dict]:
  """config.mode='evaluate': every run's newest checkpoint, named as it was trained."""
  histories = {name: writers.read_history(common.run_dir(workdir, name)) for name in tuned}
  source = best_run(histories, LENET)
  runs = {name: run_config for model in config.study.models for name, run_config in
          common.member_runs(f'baseline_{model}', baseline_config(config, model),
                             baseline_seeds(config)).items()}
  runs.update(tuned)
  runs.update(transfer_runs(config, tuned[source], common.run_dir(workdir, source)))
  return common.evaluate_runs(runs, workdir)


def baseline_stage(config: ml_collections.ConfigDict, workdir: str
                   ) -> tuple[list[dict], list[str]]:
  """Trains each model's seeds; writes baseline.csv/.md/.png; returns (rows, files)."""
  seeds = {model: common.train_members(f'baseline_{model}', baseline_config(config, model),
                                       workdir, baseline_seeds(config))
           for model in config.study.models}
  rows = [seed_row(model, histories) for model, histories in seeds.items()]
  files = [*tables.write_table(rows, os.path.join(workdir, 'baseline')),
           os.path.join(workdir, 'baseline.png')]
  curves.plot_mean_std(seeds, BASELINE_KEYS, files[-1],
                title=f'baseline on {config.data.name}: mean +- std over seeds')
  return rows, files


def runs_stage(runs: dict[str, ml_collections.ConfigDict], workdir: str, name: str,
               keys: tuple[str, ...], title: str) -> tuple[dict[str, list[dict]], list[str]]:
  """Trains `runs`; writes <name>.csv/.md (a run_row each) and <name>.png (`keys` per
  epoch); returns (histories, files)."""
  histories = common.train_runs(runs, workdir)
  files = common.write_comparison(
      [run_row(run, runs[run], history) for run, history in histories.items()], histories,
      os.path.join(workdir, name), keys, title)
  return histories, files


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) every stage, then writes the tables, figures and summary."""
  check_study(config)
  tuned = tuned_runs(config)
  if config.mode == 'evaluate':
    return evaluate_all(config, tuned, workdir)
  baseline, files = baseline_stage(config, workdir)
  histories, more = runs_stage(tuned, workdir, 'experiments', EXPERIMENT_KEYS,
                               f'experiments 1 and 2 on {config.data.name}')
  files += more
  best = {model: best_run(histories, model)
          for model in sorted(config.study.models, key=lambda model: model != LENET)}
  reports, more = classwise_reports(tuned, best, workdir)
  files += more
  source = best[LENET]
  transfer = transfer_runs(config, tuned[source], common.run_dir(workdir, source))
  target = transfer[TRANSFER].data
  transferred, more = runs_stage(transfer, workdir, 'transfer', ('train_loss', 'test_top1'),
                                 f'{source} on {target.name}: transferred vs from scratch')
  files += more
  summary = {'data': config.data.name, 'baseline': baseline,
             'experiments': {name: history[-1]['test_top1'] for name, history in histories.items()},
             'selected_by': selection_metric(histories[source]), 'classwise': reports,
             'transfer': {'source': source, 'data': target.name, 'classes': list(target.classes),
                          **{name: history[-1]['test_top1']
                             for name, history in transferred.items()}}}
  files += common.write_summary(summary, summary_lines(summary), workdir)
  return {'summary': summary, 'files': files}
