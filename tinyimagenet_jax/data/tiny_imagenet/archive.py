"""The official Tiny ImageNet tree in each form a user has it: .zip, .tar.gz/.tgz, folder.

Every reader names members by their path relative to the `tiny-imagenet-200/`
root (the folder holding `wnids.txt`), e.g. `train/n01443537/images/n01443537_0.JPEG`,
so the same archive gives the same names in every form. Zip members are read in
place, without extracting 120,000 files; a gzipped tar cannot be read at random
cheaply, so it is read in one sequential pass per request.
"""

from collections.abc import Callable, Iterable, Iterator
import dataclasses
import os
import pathlib
import tarfile
import zipfile
import zlib

from tinyimagenet_jax.errors import DataError

URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
ROOT = 'tiny-imagenet-200'
MARKER = 'wnids.txt'
TEXT_SUFFIX = '.txt'
# What a manual_dir may hold, in the order they are looked for.
MANUAL_NAMES = (ROOT, f'{ROOT}.zip', f'{ROOT}.tar.gz', f'{ROOT}.tgz')
TAR_SUFFIXES = ('.tar.gz', '.tgz')
REDOWNLOAD = f'download it again from {URL}'


def _missing(location: str, name: str) -> DataError:
  """The error for a member that the archive lacks."""
  return DataError(
      f'Tiny ImageNet archive {location} has no {name}; {REDOWNLOAD}.')


def _root_prefix(location: str, names: Iterable[str]) -> str:
  """The prefix (e.g. 'tiny-imagenet-200/') of the shallowest wnids.txt in `names`."""
  markers = [n for n in names if n == MARKER or n.endswith('/' + MARKER)]
  if not markers:
    raise DataError(
        f'{location} holds no {MARKER}, so it is not the Tiny ImageNet archive;'
        f' {REDOWNLOAD}.')
  return min(markers, key=lambda n: n.count('/'))[:-len(MARKER)]


def _relative(names: Iterable[str], prefix: str) -> tuple[str, ...]:
  """The names under `prefix`, with the prefix removed, sorted."""
  return tuple(sorted(n[len(prefix):] for n in names if n.startswith(prefix)))


@dataclasses.dataclass(frozen=True)
class FolderArchive:
  """The extracted `tiny-imagenet-200/` folder."""

  location: str
  root: pathlib.Path
  names: tuple[str, ...]

  def read_text(self, name: str) -> str:
    path = self.root / name
    if not path.is_file():
      raise _missing(self.location, name)
    return path.read_text(encoding='utf-8')

  def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields (name, bytes) for each of `names`, in that order."""
    for name in names:
      yield name, (self.root / name).read_bytes()


def open_folder(path: pathlib.Path) -> FolderArchive:
  """Lists an extracted tree: `path` is the root or the folder holding it."""
  root = path / ROOT if (path / ROOT / MARKER).is_file() else path
  if not (root / MARKER).is_file():
    raise DataError(
        f'folder {str(path)!r} holds no {MARKER} nor {ROOT}/{MARKER}; point at'
        f' the extracted {ROOT} folder or the archive itself.')
  names = []
  for folder, _, files in os.walk(root):
    relative = pathlib.Path(folder).relative_to(root).as_posix()
    prefix = '' if relative == '.' else relative + '/'
    names += [prefix + f for f in files]
  return FolderArchive(str(path), root, tuple(sorted(names)))


@dataclasses.dataclass(frozen=True)
class ZipArchive:
  """The official `tiny-imagenet-200.zip`, read member by member in place."""

  location: str
  path: pathlib.Path
  prefix: str
  names: tuple[str, ...]

  def read_text(self, name: str) -> str:
    if name not in self.names:
      raise _missing(self.location, name)
    return next(self.read_many([name]))[1].decode('utf-8')

  def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields (name, bytes) for each of `names`, in that order."""
    with zipfile.ZipFile(self.path) as archive:
      for name in names:
        try:
          data = archive.read(self.prefix + name)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
          raise DataError(
              f'Tiny ImageNet archive {self.location} is corrupt at {name}'
              f' ({error}); {REDOWNLOAD}.') from error
        yield name, data


def open_zip(path: pathlib.Path) -> ZipArchive:
  """Lists a zip archive's files (its central directory: no member is read)."""
  try:
    with zipfile.ZipFile(path) as archive:
      members = [i.filename for i in archive.infolist() if not i.is_dir()]
  except (zipfile.BadZipFile, OSError) as error:
    raise DataError(
        f'{str(path)!r} is not a readable zip archive ({error}); {REDOWNLOAD}.'
    ) from error
  prefix = _root_prefix(str(path), members)
  return ZipArchive(str(path), path, prefix, _relative(members, prefix))


@dataclasses.dataclass(frozen=True)
class TarArchive:
  """A gzipped tar of the tree; its (small) text files are kept from the listing pass."""

  location: str
  path: pathlib.Path
  prefix: str
  names: tuple[str, ...]
  texts: dict[str, bytes]

  def read_text(self, name: str) -> str:
    if name not in self.texts:
      raise _missing(self.location, name)
    return self.texts[name].decode('utf-8')

  def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields (name, bytes) for each of `names`, in archive order (one pass)."""
    wanted = {self.prefix + n for n in names}
    for member, data in _tar_pass(self.path, wanted.__contains__):
      if data is not None:
        wanted.discard(member)
        yield member[len(self.prefix):], data
    if wanted:
      raise _missing(self.location, min(wanted))


def _tar_pass(path: pathlib.Path,
              keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
  """One sequential pass: (member name, bytes if keep(name) else None) per file."""
  try:
    with tarfile.open(path, 'r|gz') as archive:
      for member in archive:
        if member.isfile():
          data = archive.extractfile(member).read() if keep(member.name) else None
          yield member.name, data
  except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
    raise DataError(
        f'{str(path)!r} is not a readable .tar.gz archive ({error}); {REDOWNLOAD}'
        f' and extract it, or use the .zip.') from error


def open_tar(path: pathlib.Path) -> TarArchive:
  """Lists a gzipped tar in one pass, keeping the text files' bytes."""
  members, texts = [], {}
  for name, data in _tar_pass(path, lambda n: n.endswith(TEXT_SUFFIX)):
    members.append(name)
    if data is not None:
      texts[name] = data
  prefix = _root_prefix(str(path), members)
  return TarArchive(
      str(path), path, prefix, _relative(members, prefix),
      {n[len(prefix):]: d for n, d in texts.items() if n.startswith(prefix)})


def open_archive(path: str | os.PathLike):
  """Opens the tree at `path`: a folder, a .zip, or a .tar.gz/.tgz."""
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    return open_folder(path)
  if not path.exists():
    raise DataError(
        f'Tiny ImageNet archive {str(path)!r} does not exist; pass the path of'
        f' {ROOT}.zip, a .tar.gz/.tgz of it, or its extracted folder.')
  if path.name.lower().endswith('.zip'):
    return open_zip(path)
  if path.name.lower().endswith(TAR_SUFFIXES):
    return open_tar(path)
  raise DataError(
      f'{str(path)!r} is neither a .zip, a .tar.gz/.tgz nor a folder; pass the'
      f' path of {ROOT}.zip, a .tar.gz/.tgz of it, or its extracted folder.')


def find_in_manual_dir(manual_dir: pathlib.Path) -> pathlib.Path | None:
  """The Tiny ImageNet tree or archive placed in `manual_dir`, if any."""
  if (manual_dir / MARKER).is_file():
    return manual_dir
  for name in MANUAL_NAMES:
    if (manual_dir / name).exists():
      return manual_dir / name
  return None
