"""Progress of long loops: a tqdm bar on a terminal; elsewhere (nohup, batch schedulers,
CI logs) one plain line every few seconds, with no carriage returns to fill the log.
"""

from collections.abc import Iterable, Iterator
import sys
import time
from typing import TextIO

import tqdm

EVERY_SECONDS = 30.0  # a plain line this often (config.progress_seconds for training)


class PlainProgress:
  """tqdm's `update`, `set_postfix`, `close` and iteration, told as whole lines:
  `<desc>: <n>/<total> <unit> (<percent>), <rate> <unit>/s[, <postfix>]`, at most once every
  `every_seconds` and once at the end."""

  def __init__(self, iterable: Iterable | None = None, total: int | None = None,
               initial: int = 0, desc: str = '', unit: str = 'it',
               every_seconds: float = EVERY_SECONDS, file: TextIO | None = None):
    self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
    self.every_seconds, self.file = every_seconds, file or sys.stderr
    self.postfix, self.start, self.first = '', time.monotonic(), initial
    self.printed_at, self.printed_n = self.start, initial

  def __iter__(self) -> Iterator:
    for item in self.iterable:
      yield item
      self.update(1)
    self.close()

  def update(self, count: int = 1) -> None:
    self.n += count
    if time.monotonic() - self.printed_at >= self.every_seconds:
      self._print()

  def set_postfix(self, refresh: bool = False, **values) -> None:
    del refresh  # a line is printed only on schedule
    self.postfix = ', '.join(f'{key}={value}' for key, value in values.items())

  def close(self) -> None:
    if self.n != self.printed_n:
      self._print()

  def line(self) -> str:
    """The progress as one line."""
    elapsed = max(time.monotonic() - self.start, 1e-9)
    done = f'{self.n}/{self.total}' if self.total else f'{self.n}'
    percent = f' ({100 * self.n / self.total:.0f}%)' if self.total else ''
    rate = f', {(self.n - self.first) / elapsed:.1f} {self.unit}/s'
    return (f'{self.desc}: {done} {self.unit}{percent}{rate}'
            + (f', {self.postfix}' if self.postfix else ''))

  def _print(self) -> None:
    print(self.line(), file=self.file, flush=True)
    self.printed_at, self.printed_n = time.monotonic(), self.n


def bar(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
        desc: str = '', unit: str = 'it', every_seconds: float = EVERY_SECONDS,
        file: TextIO | None = None, disable: bool = False):
  """A tqdm bar when `file` (default stderr) is a terminal, else a PlainProgress; a silent
  tqdm when `disable`."""
  stream = file or sys.stderr
  if disable or stream.isatty():
    return tqdm.tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit,
                     dynamic_ncols=True, file=stream, disable=disable)
  return PlainProgress(iterable, total, initial, desc, unit, every_seconds, stream)
