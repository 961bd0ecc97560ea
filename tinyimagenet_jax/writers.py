"""Metrics to disk: per epoch (JSON lines, CSV), per step (JSON lines), TensorBoard.

The per-epoch files are rewritten from the whole history each epoch, and the
per-step file is cut back to the restored step on resume, so after a crash
they hold exactly what the restored run did plus what followed.
"""

import importlib
import json
import os
import sys

from tinyimagenet_jax import atomic

METRICS_JSONL = 'metrics.jsonl'
METRICS_CSV = 'metrics.csv'
STEPS_JSONL = 'steps.jsonl'


MEMBERS_CSV = 'members.csv'


def history_as_csv(history: list[dict]) -> str:
  """One row per record; columns are every scalar key seen, in first-seen order."""
  columns = list(dict.fromkeys(key for record in history for key, value in record.items()
                               if not isinstance(value, (list, dict))))
  lines = [','.join(columns)]
  for record in history:
    lines.append(','.join(str(record.get(column, '')) for column in columns))
  return '\n'.join(lines) + '\n'


def write_history_files(workdir: str, history: list[dict]) -> None:
  """metrics.jsonl and metrics.csv holding exactly `history`."""
  atomic.write_text(os.path.join(workdir, METRICS_JSONL),
                    ''.join(json.dumps(record) + '\n' for record in history))
  atomic.write_text(os.path.join(workdir, METRICS_CSV), history_as_csv(history))
  if history and 'members' in history[0]:
    rows = [{'member': index, **member} for record in history
            for index, member in enumerate(record['members'])]
    atomic.write_text(os.path.join(workdir, MEMBERS_CSV), history_as_csv(rows))


def import_tensorboardx():
  """tensorboardX as if torch were absent: importing torch took 1.4 s, for tensors we never log."""
  # tensorboardX supports running without torch; its writer only tries `import torch`.
  if 'torch' in sys.modules or 'tensorboardX' in sys.modules:
    return importlib.import_module('tensorboardX')
  sys.modules['torch'] = None  # `import torch` raises ImportError meanwhile
  try:
    return importlib.import_module('tensorboardX')
  finally:
    del sys.modules['torch']


class MetricWriter:
  """Writes the history files and TensorBoard scalars under `workdir`."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._tensorboard = import_tensorboardx().SummaryWriter(
        os.path.join(workdir, 'tensorboard'))

  def write(self, history: list[dict]) -> None:
    """Rewrites the history files; adds the newest epoch to TensorBoard, at its last step."""
    write_history_files(self._workdir, history)
    latest = history[-1]
    for key, value in latest.items():
      tag = epoch_tag(key)
      if tag and isinstance(value, (int, float, list)):
        for name, scalar in member_scalars(tag, value):
          self._tensorboard.add_scalar(name, scalar, latest['step'])
    self._tensorboard.flush()

  def write_steps(self, first_step: int, step_metrics: list[dict]) -> None:
    """Appends one record per step (numbered from `first_step`) to steps.jsonl."""
    records = [{'step': first_step + index, **metrics}
               for index, metrics in enumerate(step_metrics)]
    with open(os.path.join(self._workdir, STEPS_JSONL), 'a') as file:
      file.write(''.join(json.dumps(record) + '\n' for record in records))
    for record in records:
      for key, value in record.items():
        if key != 'step':
          for name, scalar in member_scalars(STEP_TAGS.get(key, f'train/{key}'), value):
            self._tensorboard.add_scalar(name, scalar, record['step'])

  def close(self) -> None:
    """Flushes and closes the TensorBoard event file."""
    self._tensorboard.close()


# TensorBoard tags, grouped by split, every scalar on the global step: per step
# train/loss, train/accuracy, train/grad_norm, optimizer/learning_rate, optimizer/momentum;
# per epoch train/epoch_<metric>, <split>/<metric> for each evaluated split (val/top1,
# test/loss, validation/top5, ...) and speed/.
STEP_TAGS = {'learning_rate': 'optimizer/learning_rate', 'momentum': 'optimizer/momentum'}
EPOCH_TAGS = {'seconds': 'speed/epoch_seconds', 'images_per_second': 'speed/images_per_second',
              'grad_norm': 'train/epoch_grad_norm'}
EPOCH_UNTAGGED = ('epoch', 'step', 'learning_rate', 'momentum',  # logged per step instead
                  'members')  # members.csv holds each member's record


def epoch_tag(key: str) -> str:
  """The TensorBoard tag of an epoch record's `key` ('' for keys logged per step)."""
  if key in EPOCH_UNTAGGED:
    return ''
  if key in EPOCH_TAGS:
    return EPOCH_TAGS[key]
  split, _, metric = key.partition('_')
  return f'train/epoch_{metric}' if split == 'train' else f'{split}/{metric}'


def member_scalars(key: str, value) -> list[tuple[str, float]]:
  """(name, value) pairs for TensorBoard: one, or `key/<member>` per member of a list."""
  if isinstance(value, list):
    return [(f'{key}/{index}', item) for index, item in enumerate(value)]
  return [(key, value)]


def eval_names(record: dict) -> list[str]:
  """The splits an epoch record holds evaluations of, in its order ('val', 'test',
  'validation'...): each has `<split>_top1`."""
  return [key[:-len('_top1')] for key in record if key.endswith('_top1')]


def read_history(workdir: str) -> list[dict]:
  """The per-epoch records a run wrote to `workdir`."""
  with open(os.path.join(workdir, METRICS_JSONL)) as file:
    return [json.loads(line) for line in file]


def read_steps(workdir: str) -> list[dict]:
  """The per-step records a run wrote to `workdir` (empty if none)."""
  path = os.path.join(workdir, STEPS_JSONL)
  if not os.path.exists(path):
    return []
  with open(path) as file:
    return [json.loads(line) for line in file]


def truncate_steps(workdir: str, last_step: int) -> None:
  """Drops per-step records after `last_step` (work lost in a crash)."""
  kept = [record for record in read_steps(workdir) if record['step'] <= last_step]
  atomic.write_text(os.path.join(workdir, STEPS_JSONL),
                    ''.join(json.dumps(record) + '\n' for record in kept))
