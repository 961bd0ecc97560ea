"""Second report: the 3-conv CNN on CIFAR-10 (batch norm, dropout, early stopping,
four optimizers, t-SNE of its latent space, a saved model on the test set).

Runs, each in <workdir>/<run> (resumable), all under the early-stopping rule
config.early_stopping.rule ('' off, 'rising' the report's, 'patience'), whose
name ends every run name but the rule-free ones (bn_dropout_rising):
- the 2x2 of batch norm and dropout, with Adam: bn_dropout (the main run; it
  keeps the snapshots of config.snapshot_epochs), bn_only, dropout_only, neither;
- the optimizers of config.conv3.optimizers (name -> learning rate) with batch
  norm and dropout; Adam is the main run.

Writes regularisation.csv/.md/.png and optimizers.csv/.md/.png (per run: epochs
run and why it stopped, the epoch where each rule fires on its history, final
and best validation accuracy, test accuracy) and tsne_<flatten|fc1>_epoch<e>.png
for each snapshot the main run reached (config.conv3.tsne_points test images).
config.mode='evaluate': each run's newest checkpoint on data.eval_split (its
evaluation_<split>.json and class-wise report) and evaluation_<split>.csv/.md.
"""

import functools
import os

import jax
import ml_collections
import numpy as np
import tqdm

from tinyimagenet_jax import models
from tinyimagenet_jax import snapshots
from tinyimagenet_jax import train
from tinyimagenet_jax.analysis import tables, tsne
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.experiments import common

MAIN = 'bn_dropout'
REGULARISATION = {MAIN: (True, True), 'bn_only': (True, False),
                  'dropout_only': (False, True), 'neither': (False, False)}
STOP_RULES = ('rising', 'patience')
CURVE_KEYS = ('train_accuracy', 'val_top1', 'val_loss')
LAYERS = ('flatten', 'fc1')
OPTIONS = ('optimizers', 'tsne_points', 'tsne_steps', 'tsne_perplexity')


def run_name(base: str, config: ml_collections.ConfigDict) -> str:
  """`base` with the early-stopping rule appended (runs under other rules differ)."""
  rule = config.early_stopping.rule
  return f'{base}_{rule}' if rule else base


def regularisation_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The 2x2 of batch norm and dropout; only the main run keeps snapshots."""
  return {run_name(base, config): common.variant(config, **{
      'model.batch_norm': batch_norm,
      'model.dropout': config.model.dropout if dropout else 0.0,
      'snapshot_epochs': tuple(config.snapshot_epochs) if base == MAIN else ()})
          for base, (batch_norm, dropout) in REGULARISATION.items()}


def optimizer_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The compared optimizers besides the main run's, with batch norm and dropout."""
  return {run_name(name, config): common.variant(config, **{
      'optimizer.name': name, 'optimizer.learning_rate': rate, 'snapshot_epochs': ()})
          for name, rate in config.conv3.optimizers.items()}


def all_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Every run of the experiment, by name."""
  return regularisation_runs(config) | optimizer_runs(config)


def with_rule(stopping: ml_collections.ConfigDict, rule: str) -> ml_collections.ConfigDict:
  """The early-stopping settings `stopping` with another rule."""
  return ml_collections.ConfigDict(dict(stopping.to_dict(), rule=rule))


def fires_at(history: list[dict], stopping: ml_collections.ConfigDict) -> int | None:
  """The first epoch after which the early-stopping rule holds, or None."""
  return next((epoch for epoch in range(1, len(history) + 1)
               if train.stopped_early(history[:epoch], stopping)), None)


def stopped_by(history: list[dict], config: ml_collections.ConfigDict) -> str:
  """Why a finished run ended: its early-stopping rule, else the epoch cap."""
  return config.early_stopping.rule if train.stopped_early(
      history, config.early_stopping) else 'cap'


def run_metrics(history: list[dict], config: ml_collections.ConfigDict) -> dict:
  """A run's table columns: how it ended, its final epoch, its best validation epoch."""
  last = history[-1]
  best = max(history, key=lambda record: record['val_top1'])  # the first best
  return {'epochs_run': len(history), 'stopped_by': stopped_by(history, config),
          **{f'{rule}_fires_at': fires_at(history, with_rule(config.early_stopping, rule))
             for rule in STOP_RULES},
          'train_accuracy': last['train_accuracy'], 'val_top1': last['val_top1'],
          'train_loss': last['train_loss'], 'val_loss': last['val_loss'],
          'test_top1': last['test_top1'], 'best_val_top1': best['val_top1'],
          'best_val_epoch': best['epoch'], 'test_top1_at_best_val': best['test_top1']}


def regularisation_row(name: str, run: ml_collections.ConfigDict, history: list[dict]) -> dict:
  """One line of the batch norm x dropout table (the report's Table 2)."""
  return {'run': name, 'batch_norm': run.model.batch_norm, 'dropout': run.model.dropout,
          **run_metrics(history, run)}


def optimizer_row(name: str, run: ml_collections.ConfigDict, history: list[dict]) -> dict:
  """One line of the optimizer table (the report's Table 4)."""
  return {'run': name, 'optimizer': run.optimizer.name,
          'learning_rate': run.optimizer.learning_rate, **run_metrics(history, run)}


def sample_test_images(config: ml_collections.ConfigDict, count: int
                       ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(images, labels, class names): `count` eval-split images drawn with config.seed,
  preprocessed for evaluation."""
  source = sources.load(config.data, config.data.eval_split)
  _, eval_transform = transforms.make_preprocess(config)
  chosen = np.sort(np.random.default_rng(config.seed).choice(
      len(source), min(count, len(source)), replace=False))
  records = [eval_transform(source[int(index)]) for index in chosen]
  return (np.stack([record['image'] for record in records]),
          np.array([record['label'] for record in records]), tuple(source.class_names))


def layer_features(model, variables: dict, images: np.ndarray, batch_size: int
                   ) -> dict[str, np.ndarray]:
  """The flatten (the first dense layer's input) and FC-1 features of `images`,
  in inference mode."""
  apply = jax.jit(functools.partial(model.apply, train=False, features=True,
                                    mutable=['intermediates']))
  chunks = [apply(variables, images[start:start + batch_size])
            for start in range(0, len(images), batch_size)]
  return {'flatten': np.concatenate([sown['intermediates']['flatten'][0] for _, sown in chunks]),
          'fc1': np.concatenate([fc1 for fc1, _ in chunks])}


def write_tsne(config: ml_collections.ConfigDict, run_dir: str, epochs: list[int],
               workdir: str) -> list[str]:
  """tsne_<layer>_epoch<e>.png of the test images' features after each of `epochs`."""
  options = config.conv3
  images, labels, class_names = sample_test_images(config, options.tsne_points)
  model = models.build_model(config.model, len(class_names))
  files = []
  for epoch in epochs:
    variables = {name: value for name, value in snapshots.load_snapshot(run_dir, epoch).items()
                 if value}
    for layer, features in layer_features(model, variables, images,
                                          config.eval_batch_size).items():
      embedding = tsne.tsne(features, options.tsne_perplexity, options.tsne_steps, config.seed)
      files.append(os.path.join(workdir, f'tsne_{layer}_epoch{epoch}.png'))
      tsne.write_tsne_figure(embedding, labels, class_names, files[-1],
                             title=f'{layer} features of {len(labels)} {config.data.eval_split}'
                             f' images after epoch {epoch}')
  return files


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Every run's newest checkpoint on the eval split, and a table of the results."""
  results = common.evaluate_runs(all_runs(config), workdir)
  rows = [{'run': name, **{key: result[key] for key in
                           ('split', 'count', 'top1', 'top5', 'loss', 'macro_f1')}}
          for name, result in results.items()]
  path = os.path.join(workdir, f'evaluation_{config.data.eval_split}')
  return {'results': results, 'files': list(tables.write_table(rows, path))}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) every run, then writes the tables, curves and t-SNE figures."""
  common.require_options(config, 'conv3', OPTIONS)
  if config.mode == 'evaluate':
    return evaluate(config, workdir)
  regularisation, optimizers = regularisation_runs(config), optimizer_runs(config)
  histories = common.train_runs(regularisation | optimizers, workdir)
  main = run_name(MAIN, config)
  compared = {main: regularisation[main]} | optimizers
  files = common.write_comparison(
      [regularisation_row(name, run, histories[name]) for name, run in regularisation.items()],
      {name: histories[name] for name in regularisation}, os.path.join(workdir, 'regularisation'),
      CURVE_KEYS, f'conv3_bn on {config.data.name}: batch norm and dropout')
  files += common.write_comparison(
      [optimizer_row(name, run, histories[name]) for name, run in compared.items()],
      {run.optimizer.name: histories[name] for name, run in compared.items()},
      os.path.join(workdir, 'optimizers'), CURVE_KEYS,
      f'conv3_bn on {config.data.name}: optimizers')
  epochs = [epoch for epoch in config.snapshot_epochs if epoch <= len(histories[main])]
  if len(epochs) < len(config.snapshot_epochs):
    tqdm.tqdm.write(f'{main} stopped after {len(histories[main])} epochs: no t-SNE for epochs'
                    f' {[e for e in config.snapshot_epochs if e not in epochs]}.')
  files += write_tsne(regularisation[main], common.run_dir(workdir, main), epochs, workdir)
  return {'files': files}
