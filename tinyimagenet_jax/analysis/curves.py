"""Training curves from a run's history, as one PNG."""

import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax.analysis import integer_ticks, new_figure
from tinyimagenet_jax import writers

# A y-axis label, with its unit, per metric (the part of a history key after the split).
Y_LABELS = {'error': 'error (fraction of examples)', 'loss': 'cross-entropy loss',
            'top1': 'top-1 accuracy (fraction)', 'top5': 'top-5 accuracy (fraction)',
            'accuracy': 'accuracy (fraction)', 'seconds': 'seconds per epoch',
            'learning_rate': 'learning rate', 'momentum': 'momentum',
            'grad_norm': 'gradient norm (L2)'}


def y_label(key: str) -> str:
  """The y-axis label of history key `key` ('validation_top1' -> top-1 accuracy ...)."""
  for metric, label in Y_LABELS.items():
    if key == metric or key.endswith(f'_{metric}'):
      return label
  return key.replace('_', ' ')


def finish_epoch_axis(axis, title: str, ylabel: str, legend_size: float | None = None) -> None:
  """Title, labelled axes with whole epochs on x, a light grid and a legend: every
  per-epoch panel alike."""
  axis.set_title(title)
  axis.set_xlabel('epoch')
  axis.set_ylabel(ylabel)
  integer_ticks(axis)
  axis.grid(alpha=0.3)
  if axis.get_legend_handles_labels()[0]:
    axis.legend(fontsize=legend_size)


def save(figure, path: str, title: str = '') -> None:
  """Writes `figure` as a PNG at `path` (with a title)."""
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  atomic.save_figure(figure, path, dpi=100)


def history_panels(record: dict) -> list[tuple[str, list[tuple[str, str]]]]:
  """(title, [(history key, legend label)]) per panel: error and loss of train and of each
  split the record evaluates, each named as the split, then seconds per epoch."""
  splits = ['train', *writers.eval_names(record)]
  return [('error', [(f'{split}_error', split) for split in splits]),
          ('loss', [(f'{split}_loss', split) for split in splits]),
          ('time', [('seconds', 'train')])]


def plot_history(history: list[dict], path: str, title: str = '') -> None:
  """Error, loss and time per epoch side by side; missing keys are skipped."""
  epochs = [record['epoch'] for record in history]
  panels = history_panels(history[0])
  figure = new_figure(figsize=(5 * len(panels), 3.6))
  axes = figure.subplots(1, len(panels))
  for axis, (name, series) in zip(axes, panels):
    for key, label in series:
      if key in history[0]:
        axis.plot(epochs, [record[key] for record in history], marker='o', label=label)
    axis.set_ylim(bottom=0)
    finish_epoch_axis(axis, name, y_label(series[0][0]))
  save(figure, path, title)


STEP_PANELS = (('loss', 'loss per step'), ('learning_rate', 'learning rate'),
               ('momentum', 'momentum (Adam: beta1)'))


def plot_steps(steps: list[dict], path: str, title: str = '') -> None:
  """Per-step loss, learning rate and momentum (the ones the run logged)."""
  panels = [(key, name) for key, name in STEP_PANELS if steps and key in steps[0]]
  if not panels:
    return
  figure = new_figure(figsize=(5 * len(panels), 3.4))
  axes = figure.subplots(1, len(panels), squeeze=False)
  numbers = [record['step'] for record in steps]
  for axis, (key, name) in zip(axes[0], panels):
    axis.plot(numbers, [record[key] for record in steps], linewidth=1)
    axis.set_title(name)
    axis.set_xlabel('step')
    axis.set_ylabel(y_label(key))
    integer_ticks(axis)
    axis.grid(alpha=0.3)
  save(figure, path, title)


def plot_runs(histories: dict[str, list[dict]], keys: tuple[str, ...], path: str,
              title: str = '', highlight: tuple[str, ...] = (),
              target: float | None = None) -> None:
  """One panel per history key, one line per run: the runs of an experiment side by
  side. `highlight` runs are drawn bold (others thin); `target` is a dashed line."""
  figure = new_figure(figsize=(5.5 * len(keys), 3.8))
  axes = figure.subplots(1, len(keys), squeeze=False)
  for axis, key in zip(axes[0], keys):
    for name, history in histories.items():
      points = [(record['epoch'], record[key]) for record in history if key in record]
      if not points:
        continue
      bold = not highlight or name in highlight
      axis.plot(*zip(*points), marker='o' if bold else None, linewidth=2 if bold else 0.8,
                alpha=1.0 if bold else 0.5, label=name)
    if target is not None:
      axis.axhline(target, color='grey', linestyle='--', linewidth=1)
    finish_epoch_axis(axis, key.replace('_', ' '), y_label(key), legend_size=7)
  save(figure, path, title)


def plot_mean_std(groups: dict[str, list[list[dict]]], keys: tuple[str, ...], path: str,
                  title: str = '') -> None:
  """One panel per history key: each group's mean over its runs per epoch, +- one
  std (ddof 1) shaded; runs are cut to the group's shortest."""
  figure = new_figure(figsize=(5.5 * len(keys), 3.8))
  axes = figure.subplots(1, len(keys), squeeze=False)
  for axis, key in zip(axes[0], keys):
    for name, histories in groups.items():
      epochs = min(len(history) for history in histories)
      values = np.asarray([[record[key] for record in history[:epochs]]
                           for history in histories])
      mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
      x = np.arange(1, epochs + 1)
      axis.plot(x, mean, label=f'{name} ({len(histories)} seeds)')
      axis.fill_between(x, mean - std, mean + std, alpha=0.25)
    finish_epoch_axis(axis, key.replace('_', ' '), y_label(key), legend_size=7)
  save(figure, path, title)
