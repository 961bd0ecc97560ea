"""What every benchmark shares: its arguments, timing by alternation, the table."""

from collections.abc import Callable, Sequence
import dataclasses
import json
import time

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Args:
  """The command line's settings, as one value the benchmarks take."""

  config: ml_collections.ConfigDict | None = None
  batches: int = 100
  warmup: int = 5
  repeats: int = 5
  models: tuple[str, ...] = ()

  def require_config(self) -> ml_collections.ConfigDict:
    """The config, for the benchmarks that measure one; a clear error without it."""
    if self.config is None:
      raise ValueError('This benchmark measures a config: pass --config=configs/<name>.py')
    return self.config


def seconds(fn: Callable[[], object]) -> float:
  """Wall-clock seconds of one call of `fn` (which must block until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
  """Seconds of each contender, called in turn `repeats` times (round-robin).

  Alternating spreads the machine's background noise over all contenders
  alike, so their ratio is fairer than from back-to-back blocks.
  """
  times: dict[str, list[float]] = {name: [] for name in contenders}
  for _ in range(repeats):
    for name, fn in contenders.items():
      times[name].append(seconds(fn))
  return times


def median(values: Sequence[float]) -> float:
  """The median as a plain float."""
  return float(np.median(values))


def format_table(rows: Sequence[dict]) -> str:
  """Rows as a Markdown table whose columns are every key, in first-seen order."""
  columns = list(dict.fromkeys(key for row in rows for key in row))
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(str(row.get(column, '')) for column in columns) + ' |'
            for row in rows]
  return '\n'.join(lines)


def write_json(rows: Sequence[dict], path: str) -> None:
  """Rows as a JSON list."""
  with open(path, 'w') as file:
    json.dump(list(rows), file, indent=2)
