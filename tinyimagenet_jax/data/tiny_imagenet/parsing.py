"""Parsers for Tiny ImageNet's text files: wnids.txt, words.txt, boxes and val annotations.

Boxes are pixel coordinates (x1, y1, x2, y2) of the 64x64 image, inclusive:
0 <= x1 <= x2 <= 63 and the same for y. A bad line goes to `Problems`.
"""

from collections.abc import Iterator
import dataclasses

from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.errors import DataError

IMAGE_SIZE = 64
WNIDS = 'wnids.txt'
WORDS = 'words.txt'
VAL_ANNOTATIONS = 'val/val_annotations.txt'
BOX_FIELDS = ('x1', 'y1', 'x2', 'y2')


@dataclasses.dataclass(frozen=True)
class Box:
  """A pixel box, inclusive corners."""

  x1: int
  y1: int
  x2: int
  y2: int

  def normalized(self) -> tuple[float, float, float, float]:
    """(ymin, xmin, ymax, xmax) as fractions of the image, edges of the pixels."""
    return (self.y1 / IMAGE_SIZE, self.x1 / IMAGE_SIZE,
            (self.y2 + 1) / IMAGE_SIZE, (self.x2 + 1) / IMAGE_SIZE)


@dataclasses.dataclass(frozen=True)
class Annotation:
  """One annotation line: the image's class and box, and where it was read."""

  line: int
  wnid: str
  box: Box


def boxes_name(wnid: str) -> str:
  """The boxes file of one training class."""
  return f'train/{wnid}/{wnid}_boxes.txt'


def parse_wnids(text: str) -> tuple[str, ...]:
  """The class wnids, one a line, in file order (the full dataset's class ids)."""
  wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
  if not wnids or len(set(wnids)) != len(wnids):
    raise DataError(
        f'Tiny ImageNet {WNIDS} is empty or repeats a wnid; download the'
        ' archive again.')
  return wnids


def _lines(text: str, name: str, fields: tuple[str, ...],
           problems: Problems) -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) of each non-blank tab-separated line with len(fields) fields."""
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.strip().split('\t')
    if len(parts) != len(fields):
      problems.bad(name, f'has {len(parts)} tab-separated fields, expected'
                   f' {len(fields)} ({", ".join(fields)})', number)
      continue
    yield number, parts


def parse_words(text: str, problems: Problems) -> dict[str, str]:
  """wnid -> human-readable names (e.g. 'goldfish, Carassius auratus')."""
  return {parts[0]: parts[1]
          for _, parts in _lines(text, WORDS, ('wnid', 'words'), problems)}


def _box(parts: list[str], name: str, line: int, problems: Problems) -> Box | None:
  """The box in four coordinate fields, or None (reported) if they are not one."""
  try:
    x1, y1, x2, y2 = (int(p) for p in parts)
  except ValueError:
    problems.bad(name, f'has a non-integer coordinate in {parts}', line)
    return None
  if not (0 <= x1 <= x2 < IMAGE_SIZE and 0 <= y1 <= y2 < IMAGE_SIZE):
    problems.bad(name, f'has box {parts} outside the {IMAGE_SIZE}x{IMAGE_SIZE}'
                 ' image (need 0 <= x1 <= x2 <= 63, the same for y)', line)
    return None
  return Box(x1, y1, x2, y2)


def _add(annotations: dict[str, Annotation], file: str, annotation: Annotation,
         name: str, problems: Problems) -> None:
  """Adds one line's annotation, reporting a file already annotated."""
  if file in annotations:
    problems.bad(name, f'repeats {file} (first on line'
                 f' {annotations[file].line})', annotation.line)
  else:
    annotations[file] = annotation


def parse_boxes(text: str, wnid: str, problems: Problems) -> dict[str, Annotation]:
  """File name -> annotation, from train/<wnid>/<wnid>_boxes.txt."""
  name, annotations = boxes_name(wnid), {}
  for line, parts in _lines(text, name, ('file',) + BOX_FIELDS, problems):
    box = _box(parts[1:], name, line, problems)
    if box is not None:
      _add(annotations, parts[0], Annotation(line, wnid, box), name, problems)
  return annotations


def parse_val_annotations(text: str, wnids: tuple[str, ...],
                          problems: Problems) -> dict[str, Annotation]:
  """File name -> annotation, from val/val_annotations.txt; wnids must be known."""
  known, annotations = set(wnids), {}
  fields = ('file', 'wnid') + BOX_FIELDS
  for line, parts in _lines(text, VAL_ANNOTATIONS, fields, problems):
    if parts[1] not in known:
      problems.bad(VAL_ANNOTATIONS, f'names wnid {parts[1]!r}, which is not in'
                   f' {WNIDS}', line)
      continue
    box = _box(parts[2:], VAL_ANNOTATIONS, line, problems)
    if box is not None:
      _add(annotations, parts[0], Annotation(line, parts[1], box),
           VAL_ANNOTATIONS, problems)
  return annotations
