"""Per-class metrics from labels and predictions: confusion, accuracy, precision, recall, F1.

The fourth report's class-wise accuracy and confusion matrix on CIFAR-100 and
the fifth report's best and worst Tiny ImageNet classes by name. The scores
follow scikit-learn's definitions (tests/test_analysis.py checks them against
it): ratios with a zero denominator are 0 (zero_division=0), and macro F1
averages the classes that occur in the labels or the predictions. They are
computed here from the confusion matrix with numpy: importing sklearn.metrics
(and SciPy) took 3.0 s of a 20 s smoke run, the arithmetic microseconds.
"""

import math
import os

import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax.analysis import new_figure
from tinyimagenet_jax.analysis import tables

ANNOTATE_MAX_CLASSES = 20  # confusion cells show their counts up to this many classes
TICK_LABELS_MAX = 100  # beyond this many classes, only every n-th class is named


def as_predictions(scores: np.ndarray) -> np.ndarray:
  """Predicted classes: the argmax of (N, C) probabilities or logits, or (N,) classes as is."""
  scores = np.asarray(scores)
  return scores.argmax(axis=-1) if scores.ndim == 2 else scores.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """(C, C) counts: row = true class, column = predicted class."""
  cells = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
  return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator per class, 0 where the denominator is 0 (zero_division=0)."""
  numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
  return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
  """(C,) fraction of each class's examples predicted correctly (its recall)."""
  return precision_recall_f1(confusion)['recall']


def precision_recall_f1(confusion: np.ndarray) -> dict[str, np.ndarray]:
  """(C,) precision, recall and F1 of each class, as one-vs-rest."""
  hits = np.diag(confusion)
  precision, recall = ratio(hits, confusion.sum(axis=0)), ratio(hits, confusion.sum(axis=1))
  return {'precision': precision, 'recall': recall,
          'f1': ratio(2 * precision * recall, precision + recall)}


def macro_f1(confusion: np.ndarray) -> float:
  """The unweighted mean F1 over the classes that occur (in the labels or the predictions)."""
  occurring = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
  return float(precision_recall_f1(confusion)['f1'][occurring].mean()) if occurring.any() else 0.0


def best_and_worst(accuracy: np.ndarray, support: np.ndarray, class_names, k: int = 5
                   ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
  """The k highest and k lowest (name, accuracy) among classes with examples; ties by index."""
  present = np.flatnonzero(np.asarray(support) > 0)
  order = present[np.lexsort((present, -accuracy[present]))]
  named = [(class_names[index], float(accuracy[index])) for index in order]
  return named[:k], named[::-1][:k]


def classwise_rows(confusion: np.ndarray, class_names) -> list[dict]:
  """One table row per class: support, correct, accuracy, precision, recall, F1."""
  scores = precision_recall_f1(confusion)
  return [{'class': index, 'name': name, 'support': int(confusion[index].sum()),
           'correct': int(confusion[index, index]), 'accuracy': float(scores['recall'][index]),
           'precision': float(scores['precision'][index]),
           'recall': float(scores['recall'][index]), 'f1': float(scores['f1'][index])}
          for index, name in enumerate(class_names)]


def tick_fontsize(num_labels: int, inches: float) -> float:
  """The font size (points, 4 to 9) at which `num_labels` names fit side by side in `inches`."""
  return float(np.clip(0.7 * 72 * inches / max(num_labels, 1), 4, 9))


def plot_classwise_accuracy(series: dict[str, np.ndarray], class_names, path: str,
                            title: str = '') -> None:
  """Bars of per-class accuracy, classes sorted by the first series; one colour per series.

  Several series (e.g. {'CNN': ..., 'MLP': ...}) compare models class by class,
  as in the fourth report; dashed lines mark each series' mean.
  """
  names = list(series)
  num_classes = len(class_names)
  order = np.argsort(-np.asarray(series[names[0]]), kind='stable')
  width = 0.8 / len(names)
  inches = max(6.0, 0.12 * num_classes + 2)
  figure = new_figure(figsize=(inches, 4.2))
  axis = figure.subplots()
  for number, name in enumerate(names):
    values = np.asarray(series[name])[order]
    bars = axis.bar(np.arange(num_classes) + (number - (len(names) - 1) / 2) * width, values,
                    width=width, label=f'{name} (mean {values.mean():.3f})')
    axis.axhline(values.mean(), color=bars.patches[0].get_facecolor(), linestyle='--',
                 linewidth=1)
  axis.set_xticks(np.arange(num_classes))
  axis.set_xticklabels([class_names[index] for index in order], rotation=90,
                       fontsize=tick_fontsize(num_classes, inches - 1))
  axis.set_xlim(-0.6, num_classes - 0.4)
  axis.set_ylim(0, 1)
  axis.set_ylabel('accuracy')
  axis.grid(axis='y', alpha=0.3)
  axis.legend(loc='upper right')
  if title:
    axis.set_title(title)
  figure.tight_layout()
  atomic.save_figure(figure, path, dpi=100)


def plot_confusion_matrix(confusion: np.ndarray, class_names, path: str, title: str = '') -> None:
  """A heatmap of the row-normalised confusion matrix (true rows, predicted columns).

  Up to ANNOTATE_MAX_CLASSES classes each cell shows its count; up to
  TICK_LABELS_MAX every class is named, beyond that every n-th.
  """
  num_classes = len(class_names)
  side = float(np.clip(0.13 * num_classes + 3, 6, 20))
  figure = new_figure(figsize=(side, side))
  axis = figure.subplots()
  totals = confusion.sum(axis=1, keepdims=True)  # each true class's examples
  image = axis.imshow(confusion / np.maximum(totals, 1), cmap='Blues',
                      vmin=0, vmax=1, interpolation='nearest')
  figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label='colour: fraction of the true class (cells: counts)')
  if num_classes <= ANNOTATE_MAX_CLASSES:
    for (row, column), count in np.ndenumerate(confusion):
      axis.text(column, row, str(count), ha='center', va='center', fontsize=8,
                color='white' if count > totals[row, 0] / 2 else 'black')
  ticks = np.arange(0, num_classes, math.ceil(num_classes / TICK_LABELS_MAX))
  labels = [class_names[index] for index in ticks]
  fontsize = tick_fontsize(len(ticks), 0.75 * side)
  axis.set_xticks(ticks)
  axis.set_xticklabels(labels, rotation=90, fontsize=fontsize)
  axis.set_yticks(ticks)
  axis.set_yticklabels(labels, fontsize=fontsize)
  axis.set_xlabel('predicted')
  axis.set_ylabel('true')
  if title:
    axis.set_title(title)
  figure.tight_layout()
  atomic.save_figure(figure, path, dpi=150 if num_classes > ANNOTATE_MAX_CLASSES else 100)


def write_classwise_report(labels: np.ndarray, probabilities: np.ndarray, class_names,
                           directory: str, prefix: str = 'classwise', k: int = 5) -> dict:
  """Writes the per-class table, the confusion matrix (CSV) and both figures; returns a summary.

  `probabilities` may be (N, C) scores or (N,) predicted classes. Files, under
  `directory`: <prefix>_classes.{csv,md}, <prefix>_confusion.csv,
  <prefix>_accuracy.png, <prefix>_confusion.png. The summary holds accuracy,
  macro_f1, and the best and worst k classes as (name, accuracy).
  """
  os.makedirs(directory, exist_ok=True)
  base = os.path.join(directory, prefix)
  confusion = confusion_matrix(labels, as_predictions(probabilities), len(class_names))
  accuracy = per_class_accuracy(confusion)
  tables.write_table(classwise_rows(confusion, class_names), base + '_classes')
  np.savetxt(base + '_confusion.csv', confusion, fmt='%d', delimiter=',')
  plot_classwise_accuracy({'accuracy': accuracy}, class_names, base + '_accuracy.png', prefix)
  plot_confusion_matrix(confusion, class_names, base + '_confusion.png', prefix)
  best, worst = best_and_worst(accuracy, confusion.sum(axis=1), class_names, k)
  return {'accuracy': float(np.trace(confusion) / confusion.sum()),
          'macro_f1': macro_f1(confusion), 'best': best, 'worst': worst}
