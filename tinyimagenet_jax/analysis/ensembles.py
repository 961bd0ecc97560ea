"""Ensembles by averaging members' probabilities, and accuracy over every subset of members.

The fifth report's section 6: an ensemble of models m_1..m_k predicts the mean
of their class probabilities; with K members, each size k has C(K, k) possible
ensembles, and Figure 7 plots every one's accuracy against k.
"""

import itertools

import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax.analysis import new_figure


def ensemble_probabilities(member_probabilities: np.ndarray, members=None) -> np.ndarray:
  """(N, C) mean of the chosen members' (K, N, C) probabilities; all members by default."""
  member_probabilities = np.asarray(member_probabilities)
  chosen = range(len(member_probabilities)) if members is None else list(members)
  return member_probabilities[chosen].mean(axis=0)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy of (N, C) probabilities against (N,) labels."""
  return float(np.mean(np.asarray(probabilities).argmax(axis=-1) == np.asarray(labels)))


def subset_accuracies(member_probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
  """One row {size, members, accuracy} per non-empty subset of members, by size then members."""
  count = len(member_probabilities)
  return [{'size': size, 'members': members,
           'accuracy': accuracy(ensemble_probabilities(member_probabilities, members), labels)}
          for size in range(1, count + 1)
          for members in itertools.combinations(range(count), size)]


def summarise_by_size(rows: list[dict]) -> list[dict]:
  """One row {size, subsets, mean, min, max} of accuracy per ensemble size."""
  sizes = sorted({row['size'] for row in rows})
  summary = []
  for size in sizes:
    values = np.array([row['accuracy'] for row in rows if row['size'] == size])
    summary.append({'size': size, 'subsets': len(values), 'mean': float(values.mean()),
                    'min': float(values.min()), 'max': float(values.max())})
  return summary


def accuracy_by_ensemble_size(member_probabilities: np.ndarray, labels: np.ndarray
                              ) -> tuple[list[dict], list[dict]]:
  """Every subset's accuracy (all C(K, k) for k = 1..K) and the per-size mean, min and max."""
  rows = subset_accuracies(member_probabilities, labels)
  return rows, summarise_by_size(rows)


def plot_accuracy_by_ensemble_size(rows: list[dict], path: str, title: str = '') -> None:
  """Every subset as a dot (spread a little sideways within its size), the mean as a line."""
  summary = summarise_by_size(rows)
  figure = new_figure(figsize=(6, 4.2))
  axis = figure.subplots()
  for entry in summary:
    values = [row['accuracy'] for row in rows if row['size'] == entry['size']]
    offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
    axis.scatter(entry['size'] + offsets, values, s=16, color='tab:blue', alpha=0.6,
                 label='one ensemble' if entry is summary[0] else None)
  axis.plot([entry['size'] for entry in summary], [entry['mean'] for entry in summary],
            color='tab:red', marker='o', label='mean over ensembles')
  axis.set_xticks([entry['size'] for entry in summary])
  axis.set_xlabel('ensemble size k')
  axis.set_ylabel('accuracy')
  axis.grid(alpha=0.3)
  axis.legend()
  if title:
    axis.set_title(title)
  figure.tight_layout()
  atomic.save_figure(figure, path, dpi=100)
