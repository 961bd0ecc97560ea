"""Outputs that are either whole or absent: files and folders renamed into place when done.

A crash or an error halfway through a write leaves the previous file or folder
as it was, never a mix of old and new or a truncated file, and no partial
files lying beside it.
"""

from collections.abc import Iterator
import contextlib
import os
import pathlib
import shutil


def _sibling(path: pathlib.Path, tag: str) -> pathlib.Path:
  """A hidden name beside `path`, unique to this process."""
  return path.with_name(f'.{path.name}.{tag}-{os.getpid()}')


@contextlib.contextmanager
def replaced_file(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path to write; renames it over `path` when the block succeeds,
  deletes it when the block fails."""
  path = pathlib.Path(path)
  temporary = _sibling(path, 'partial')
  try:
    yield temporary
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` whole or not at all."""
  with replaced_file(path) as temporary:
    temporary.write_text(text)


def save_figure(figure, path: str | os.PathLike, **savefig_options) -> None:
  """`figure.savefig(path)` whole or not at all (as a PNG unless `format` says otherwise)."""
  with replaced_file(path) as temporary:
    figure.savefig(temporary, **{'format': 'png', **savefig_options})


@contextlib.contextmanager
def replaced_folder(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a new empty temporary folder to fill; when the block succeeds it takes the
  place of `path` (whose old contents are then deleted), when it fails it is deleted and
  `path` is left as it was."""
  path = pathlib.Path(path).expanduser()
  temporary, old = _sibling(path, 'partial'), _sibling(path, 'old')
  path.parent.mkdir(parents=True, exist_ok=True)
  shutil.rmtree(temporary, ignore_errors=True)
  temporary.mkdir()
  try:
    yield temporary
    if path.exists():
      path.rename(old)
    temporary.rename(path)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
