"""Bad images and annotation lines: a one-sentence DataError, or skipped and recorded.

By default the first bad file or line stops the build with a DataError naming
it (and the line) and saying how to fix it. With `skip=True` each one is
logged and appended to `skipped`, which the builder writes into the dataset's
metadata and the export into dataset_stats.json: nothing is dropped silently.
"""

import dataclasses

from absl import logging

from tinyimagenet_jax.errors import DataError

FIX = ('fix or remove it (or download the archive again), or set skip_corrupt to'
       ' skip bad images and lines and record them')


@dataclasses.dataclass
class Problems:
  """Where bad input in `location` goes: raised (the default) or skipped into `skipped`."""

  location: str
  skip: bool
  skipped: list[str] = dataclasses.field(default_factory=list)

  def bad(self, name: str, what: str, line: int | None = None) -> None:
    """Reports that member `name` (at `line`, if given) `what` (a predicate)."""
    where = f'{name} line {line}' if line else name
    if not self.skip:
      raise DataError(f'Tiny ImageNet {where} in {self.location} {what}; {FIX}.')
    logging.warning('Skipping Tiny ImageNet %s: %s', where, what)
    self.skipped.append(f'{where}: {what}')
