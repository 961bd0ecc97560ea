"""The evaluator, defined once, and the modes that score a saved run.

`evaluate(run, state, split)` gives the same quantities everywhere: the loop's
epoch records, `--config.mode=evaluate` and the experiments: `loss` (mean
cross-entropy), `top1`, `top5` and `count`, each per member for stacked members
(an ensemble's scores from averaged probabilities are `ensemble_*`).
`--config.mode=evaluate` restores the newest checkpoint of the workdir and
evaluates it on `data.eval_split` (metrics and a class-wise report);
`--config.mode=predict` writes `predictions_<split>.csv` (a header, then per image
its id, the predicted class, its probability and the top-5 classes) and
`predictions_<split>.txt` (`<file name> <predicted class>`; for Tiny ImageNet the
wnid: the format of the course's evaluation server), also for unlabelled splits.
"""

import csv
import dataclasses
import io
import json
import math
import os

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax import build
from tinyimagenet_jax import checkpoint
from tinyimagenet_jax import members
from tinyimagenet_jax.analysis import classwise
from tinyimagenet_jax.data import resident
from tinyimagenet_jax.state import TrainState

EVALUATION_JSON = 'evaluation_{split}.json'
PREDICTIONS_CSV = 'predictions_{split}.csv'
PREDICTIONS_TXT = 'predictions_{split}.txt'
PREDICTION_COLUMNS = ('id', 'predicted', 'probability', 'top5')
# The evaluator's quantities and the sums (steps.eval_outputs) each is the mean of.
MEANS = (('loss', 'losses'), ('top1', 'top1_hits'), ('top5', 'top5_hits'))


@dataclasses.dataclass
class Scores:
  """`metrics` (loss, top1, top5, count: numbers, or per-member lists for stacked
  members) and, when kept, `probabilities` ((N, classes) or (K, N, classes)) with
  the `labels` of the N examples in order."""

  metrics: dict
  probabilities: np.ndarray | None = None
  labels: np.ndarray | None = None


def as_host(value):
  """A device or numpy scalar as a Python number; a per-member array as a list."""
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def exact_sum(rows: list) -> np.ndarray:
  """The per-example values of every batch ((B,) or (K, B) each) summed along the examples
  exactly (math.fsum: correctly rounded), so the total is the same however the examples
  were batched and padded; one total per member."""
  values = np.concatenate([np.asarray(row, np.float64) for row in rows], axis=-1)
  if values.ndim == 1:
    return np.float64(math.fsum(values))
  return np.array([math.fsum(member) for member in values])


def means(outputs: list[dict]) -> dict:
  """The metrics from every batch's outputs: each a mean over the real examples."""
  totals = {key: np.sum([out[key] for out in outputs], axis=0, dtype=np.float64)
            for key in ('count', 'top1_hits', 'top5_hits')}
  totals['losses'] = exact_sum([out['losses'] for out in outputs])
  count = totals['count']
  return {name: as_host(totals[key] / count) for name, key in MEANS} | {
      'count': as_host(count.astype(np.int64))}


def whole_on_host(tree):
  """`tree`'s arrays in full as numpy: with several JAX processes, the rows each process
  holds (per-example outputs, its host batches) are gathered from all, in global order."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def without_optimizer(state: TrainState) -> TrainState:
  """`state` less its optimizer's state, which no evaluation reads: runs that differ only in
  their optimizer then evaluate with one program, kept once (`programs`)."""
  return state.replace(opt_state=())


def evaluate(run: build.Run, state: TrainState, split: str,
             keep_probabilities: bool = False) -> Scores:
  """Scores `state` on every real example of eval split `split` of `run`, batch by batch:
  gathered from the device path's resident split, else read on the host; either way the
  same evaluation step, one program for every split."""
  state = without_optimizer(state)
  if run.device is not None and not keep_probabilities:
    data = run.device.splits[split]
    return Scores(means(jax.device_get([
        run.eval_step(state, run.device.eval_batch(data, index))
        for index in range(resident.batch_count(data, run.config.eval_batch_size))])))
  step = run.eval_outputs if keep_probabilities else run.eval_step
  outputs, batches = [], []
  for batch in run.eval_batches(split):
    outputs.append(step(state, run.device_batch(batch)))
    batches.append({'label': batch['label'], 'mask': batch['mask']})
  # After dispatching every batch: no wait in between. Sums are replicated; per-example
  # outputs and labels are gathered from every process.
  if keep_probabilities:
    outputs, batches = whole_on_host(outputs), whole_on_host(batches)
  else:
    outputs = jax.device_get(outputs)
  scores = Scores(means(outputs))
  if keep_probabilities:
    scores.probabilities = np.concatenate(
        [np.asarray(out['probabilities'])[..., batch['mask'], :]
         for out, batch in zip(outputs, batches)], axis=-2)
    scores.labels = np.concatenate([batch['label'][batch['mask']] for batch in batches])
  return scores


def restore(config: ml_collections.ConfigDict, workdir: str,
            purpose: str = 'evaluate') -> build.Run:
  """A run of `config` built for `purpose`, holding the newest state saved in `workdir`."""
  run = build.build(config, purpose)
  saved = checkpoint.Checkpoints(checkpoint.directory(workdir), keep=1)
  try:
    return dataclasses.replace(run, state=saved.restore_state(run.state))
  finally:
    saved.close()


def ensemble_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 and top-5 of the members' averaged probabilities (K, N, classes)."""
  averaged = probabilities.mean(axis=0)
  top5 = np.argsort(averaged, axis=-1)[:, -5:]
  return {'ensemble_top1': float(np.mean(averaged.argmax(-1) == labels)),
          'ensemble_top5': float(np.mean(np.any(top5 == labels[:, None], axis=-1)))}


def score_saved(config: ml_collections.ConfigDict, workdir: str) -> tuple[build.Run, Scores]:
  """The newest checkpoint of `workdir` scored on `data.eval_split`, probabilities kept."""
  run = restore(config, workdir)
  return run, evaluate(run, run.state, config.data.eval_split, keep_probabilities=True)


def evaluate_saved(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the newest checkpoint on `data.eval_split`; writes the metrics as
  JSON and a class-wise report (figures, per-class table). Returns the metrics."""
  run, scores = score_saved(config, workdir)
  split = config.data.eval_split
  stacked = run.member_count > 1
  probabilities = scores.probabilities.mean(axis=0) if stacked else scores.probabilities
  summary = classwise.write_classwise_report(scores.labels, probabilities, run.class_names,
                                             workdir, f'evaluation_{split}')
  result = {'split': split, **members.record(scores.metrics, run.member_count),
            **(ensemble_metrics(scores.probabilities, scores.labels) if stacked else {}),
            **{key: summary[key] for key in ('macro_f1', 'best', 'worst')}}
  atomic.write_text(os.path.join(workdir, EVALUATION_JSON.format(split=split)),
                    json.dumps(result, indent=2))
  return result


def predictions_table(ids: list[str], class_names, probabilities: np.ndarray) -> str:
  """CSV text with a header: id, predicted (class name), probability (its softmax
  probability), top5 (the five likeliest class names, likeliest first, space-separated)."""
  order = np.argsort(-probabilities, axis=-1, kind='stable')[:, :5]
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(PREDICTION_COLUMNS)
  for example_id, likeliest, row in zip(ids, order, probabilities):
    writer.writerow([example_id, class_names[likeliest[0]], f'{row[likeliest[0]]:.6f}',
                     ' '.join(class_names[index] for index in likeliest)])
  return text.getvalue()


def write_predictions(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`<workdir>/predictions_<split>.csv` (predictions_table) and `predictions_<split>.txt`
  (`<id> <predicted class>` per line, the course server's format); returns the CSV's path.
  The id is the example's file name where the source has one, else its index."""
  run = restore(config, workdir, 'predict')
  split = config.data.eval_split
  probabilities = evaluate(run, run.state, split, keep_probabilities=True).probabilities
  probabilities = probabilities.mean(axis=0) if run.member_count > 1 else probabilities
  source = run.eval_sources[split]
  ids = [source.name(index) for index in range(len(source))]
  path = os.path.join(workdir, PREDICTIONS_CSV.format(split=split))
  atomic.write_text(path, predictions_table(ids, run.class_names, probabilities))
  atomic.write_text(os.path.join(workdir, PREDICTIONS_TXT.format(split=split)), ''.join(
      f'{example_id} {run.class_names[label]}\n'
      for example_id, label in zip(ids, probabilities.argmax(-1))))
  return path
