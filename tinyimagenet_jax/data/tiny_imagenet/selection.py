"""Which images go into which split: the full dataset, or a seeded subset of classes.

Full (`num_classes=0`): the official splits, train 100,000 (boxes from each
class's boxes file), validation 10,000 (labels and boxes from
val_annotations.txt) and test 10,000 (unlabelled); class ids in wnids.txt order.

Subset: `numpy.random.default_rng(seed)` first draws `num_classes` of the
wnids (in wnids.txt order) without replacement; class ids follow wnids.txt
order among the drawn classes. Then, class by class in class-id order, the
same generator permutes the class's training images (file names sorted as
strings) and the first `train`, next `validation` and next `test` of that
permutation form the three splits. The same parameters give the same classes
and files on any machine.
"""

from collections.abc import Sequence
import dataclasses
import functools

import numpy as np

from tinyimagenet_jax.data.tiny_imagenet import parsing
from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.errors import DataError

SPLITS = ('train', 'validation', 'test')
IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image of a split: its path in the tree, class and box (None: unlabelled)."""

  path: str
  wnid: str | None
  box: parsing.Box | None


@dataclasses.dataclass(frozen=True)
class Plan:
  """The classes (class id -> wnid, words) and each split's entries, sorted by path."""

  wnids: tuple[str, ...]
  words: tuple[str, ...]
  splits: dict[str, tuple[Entry, ...]]

  @functools.cached_property
  def labels(self) -> dict[str, int]:
    """wnid -> class id."""
    return {w: i for i, w in enumerate(self.wnids)}


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_SUFFIXES)


def train_images(names: Sequence[str], wnids: tuple[str, ...],
                 problems: Problems) -> dict[str, list[str]]:
  """wnid -> its sorted train/<wnid>/images/* paths; folders of unknown wnids are bad."""
  folders: dict[str, list[str]] = {}
  for name in names:
    parts = name.split('/')
    if len(parts) == 4 and parts[0] == 'train' and parts[2] == 'images' and _is_image(name):
      folders.setdefault(parts[1], []).append(name)
  for wnid in sorted(set(folders) - set(wnids)):
    problems.bad(f'train/{wnid}/', f'is the folder of wnid {wnid!r}, which is not in'
                 f' {parsing.WNIDS} ({len(folders[wnid])} image(s))')
  empty = [w for w in wnids if w not in folders]
  if empty:
    raise DataError(
        f'Tiny ImageNet has no images in train/{empty[0]}/images/ for wnid'
        f' {empty[0]!r} of {parsing.WNIDS} ({len(empty)} such classes); download'
        ' the archive again.')
  return {w: sorted(folders[w]) for w in wnids}


def images_under(names: Sequence[str], folder: str) -> list[str]:
  """The sorted image paths directly in `folder` (e.g. 'val/images/')."""
  return sorted(n for n in names
                if n.startswith(folder) and '/' not in n[len(folder):] and _is_image(n))


def annotate(paths: Sequence[str], annotations: dict[str, parsing.Annotation],
             name: str, problems: Problems) -> list[Entry]:
  """Entries for the `paths` that have a line in annotation file `name`."""
  entries = []
  for path in paths:
    annotation = annotations.get(path.rsplit('/', 1)[1])
    if annotation is None:
      problems.bad(path, f'has no line in {name}')
    else:
      entries.append(Entry(path, annotation.wnid, annotation.box))
  return entries


def check_files_exist(annotations: dict[str, parsing.Annotation], paths: Sequence[str],
                      name: str, problems: Problems) -> None:
  """Reports each line of annotation file `name` naming a file not in `paths`."""
  present = {p.rsplit('/', 1)[1] for p in paths}
  for file, annotation in sorted(annotations.items(), key=lambda i: i[1].line):
    if file not in present:
      problems.bad(name, f'names {file}, which is not in the archive', annotation.line)


def class_boxes(archive, wnid: str, images: list[str], problems: Problems
                ) -> dict[str, parsing.Annotation]:
  """One class's boxes file, parsed and checked against its images."""
  name = parsing.boxes_name(wnid)
  annotations = parsing.parse_boxes(archive.read_text(name), wnid, problems)
  check_files_exist(annotations, images, name, problems)
  return annotations


def choose_classes(num_wnids: int, num_classes: int, rng: np.random.Generator) -> list[int]:
  """`num_classes` distinct wnid indices drawn by `rng`, in increasing order."""
  return sorted(int(i) for i in rng.choice(num_wnids, size=num_classes, replace=False))


def split_files(files: Sequence[str], sizes: Sequence[int],
                rng: np.random.Generator) -> list[list[str]]:
  """Consecutive runs of `sizes` files from a permutation by `rng`, each sorted."""
  order = rng.permutation(len(files))
  bounds = np.cumsum([0, *sizes])
  return [sorted(files[i] for i in order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def full_splits(archive, wnids: tuple[str, ...], images: dict[str, list[str]],
                problems: Problems) -> dict[str, list[Entry]]:
  """The official train, validation and (unlabelled) test splits."""
  train = []
  for wnid in wnids:
    train += annotate(images[wnid], class_boxes(archive, wnid, images[wnid], problems),
                      parsing.boxes_name(wnid), problems)
  val_images = images_under(archive.names, 'val/images/')
  val_annotations = parsing.parse_val_annotations(
      archive.read_text(parsing.VAL_ANNOTATIONS), wnids, problems)
  check_files_exist(val_annotations, val_images, parsing.VAL_ANNOTATIONS, problems)
  validation = annotate(val_images, val_annotations, parsing.VAL_ANNOTATIONS, problems)
  test = [Entry(p, None, None) for p in images_under(archive.names, 'test/images/')]
  return {'train': train, 'validation': validation, 'test': test}


def subset_splits(archive, wnids: tuple[str, ...], images: dict[str, list[str]],
                  sizes: Sequence[int], rng: np.random.Generator,
                  problems: Problems) -> dict[str, list[Entry]]:
  """Each class's images split by `rng` into `sizes` (train, validation, test)."""
  splits = {s: [] for s in SPLITS}
  for wnid in wnids:
    if len(images[wnid]) < sum(sizes):
      raise DataError(
          f'Tiny ImageNet class {wnid} has {len(images[wnid])} training images,'
          f' fewer than the {sum(sizes)} a subset split of {tuple(sizes)} needs;'
          ' use smaller split sizes.')
    boxes = class_boxes(archive, wnid, images[wnid], problems)
    for split, files in zip(SPLITS, split_files(images[wnid], sizes, rng)):
      splits[split] += annotate(files, boxes, parsing.boxes_name(wnid), problems)
  return splits


def make_plan(archive, num_classes: int, sizes: Sequence[int], seed: int,
              problems: Problems) -> Plan:
  """The classes and split entries of the full dataset (num_classes=0) or a subset."""
  all_wnids = parsing.parse_wnids(archive.read_text(parsing.WNIDS))
  images = train_images(archive.names, all_wnids, problems)
  if num_classes:
    if num_classes > len(all_wnids):
      raise DataError(
          f'a Tiny ImageNet subset of {num_classes} classes needs more than the'
          f' {len(all_wnids)} wnids in {parsing.WNIDS}; choose at most'
          f' {len(all_wnids)}.')
    rng = np.random.default_rng(seed)
    wnids = tuple(all_wnids[i] for i in choose_classes(len(all_wnids), num_classes, rng))
    splits = subset_splits(archive, wnids, images, sizes, rng, problems)
  else:
    wnids = all_wnids
    splits = full_splits(archive, wnids, images, problems)
  words = parsing.parse_words(archive.read_text(parsing.WORDS), problems)
  unnamed = [w for w in wnids if w not in words]
  if unnamed:
    raise DataError(
        f'Tiny ImageNet {parsing.WORDS} has no line for wnid {unnamed[0]!r}'
        f' ({len(unnamed)} such wnids); download the archive again.')
  return Plan(wnids, tuple(words[w] for w in wnids),
              {s: tuple(sorted(e, key=lambda e: e.path)) for s, e in splits.items()})
