"""The first report's dataset artifacts for any config, computed from the archive.

Written into one folder, with no TFDS build: classes.txt (one wnid a line, in
class-id order), labels.json (wnid -> class id), dataset_stats.json
(per-channel mean and std of the train split's RGB pixels scaled to [0, 1],
the pixel count, the AlexNet preprocessing settings, and what skip_corrupt
skipped) and {train,val,test}_manifest.csv (one row per image, sorted by
path; the full config's unlabelled test rows have empty class and box
columns). The selection, parsing and decoding are the builder's own, so the
manifests list exactly the images the builder writes.
"""

import csv
import dataclasses
import json
import math
import pathlib

import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax import progress as progress_lib
from tinyimagenet_jax.data.tiny_imagenet import archive as archive_lib
from tinyimagenet_jax.data.tiny_imagenet import examples
from tinyimagenet_jax.data.tiny_imagenet import selection
from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.data.tiny_imagenet.tiny_imagenet_dataset_builder import TinyImagenetConfig
from tinyimagenet_jax.errors import ConfigError

MANIFESTS = {'train': 'train_manifest.csv', 'validation': 'val_manifest.csv',
             'test': 'test_manifest.csv'}
COLUMNS = ('split', 'relative_path', 'class_name', 'class_id', 'bbox_x1', 'bbox_y1',
           'bbox_x2', 'bbox_y2', 'words')
# The report's AlexNet preprocessing, for a model that wants it: the statistics are not of it.
ALEXNET = {'resize_shorter': 256, 'crop_size': 224}
STATISTICS_OF = ('the training images as stored (64x64 RGB), pixels / 255, before any resize'
                 ' or crop')


@dataclasses.dataclass
class PixelSums:
  """Exact per-channel integer sums of uint8 pixels and their squares."""

  pixels: int = 0
  total: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0])
  squares: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0])

  def add(self, image: np.ndarray) -> None:
    """Adds one HxWx3 uint8 image."""
    values = image.reshape(-1, 3).astype(np.int64)
    self.pixels += len(values)
    self.total = [t + int(s) for t, s in zip(self.total, values.sum(0))]
    self.squares = [q + int(s) for q, s in zip(self.squares, (values * values).sum(0))]

  def stats(self) -> dict:
    """Mean and (population) std per channel of the pixels divided by 255."""
    n = self.pixels
    return {
        'mean': [t / (255 * n) for t in self.total],
        'std': [math.sqrt(q * n - t * t) / (255 * n)
                for t, q in zip(self.total, self.squares)],
        'pixel_count': n,
    }


def manifest_row(split: str, plan: selection.Plan, entry: selection.Entry) -> dict:
  """One manifest row; class and box columns are empty for an unlabelled image."""
  row = {'split': split, 'relative_path': entry.path}
  if entry.wnid is None:
    return {**row, **{c: '' for c in COLUMNS[2:]}}
  label, box = plan.labels[entry.wnid], entry.box
  return {**row, 'class_name': entry.wnid, 'class_id': label, 'bbox_x1': box.x1,
          'bbox_y1': box.y1, 'bbox_x2': box.x2, 'bbox_y2': box.y2,
          'words': plan.words[label]}


def write_manifest(path: pathlib.Path, rows: list[dict]) -> None:
  """A CSV with COLUMNS, rows sorted by relative_path."""
  with path.open('w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r['relative_path']))


def write_artifacts(archive_path: str, out_dir: str, config: TinyImagenetConfig,
                    skip_corrupt: bool = False, progress: bool = True) -> dict[str, int]:
  """Writes the artifacts of `config` into `out_dir`; returns the images per split.

  They are written into a temporary folder that replaces `out_dir` only when all are
  written: a failure leaves an earlier export in `out_dir` as it was.
  """
  out = pathlib.Path(out_dir).expanduser()
  if out.exists() and not out.is_dir():
    raise ConfigError(f'--out={out_dir} is a file; give a folder to write the artifacts into.')
  tree = archive_lib.open_archive(archive_path)
  problems = Problems(tree.location, skip_corrupt)
  plan = selection.make_plan(tree, config.num_classes, config.split_sizes, config.seed,
                             problems)
  sums, counts = PixelSums(), {}
  with atomic.replaced_folder(out) as folder:
    for split in selection.SPLITS:
      rows = []
      images = examples.read_images(tree, plan.splits[split], problems)
      desc = 'train images, pixel statistics' if split == 'train' else f'{split} images'
      for entry, pixels in progress_lib.bar(images, desc=desc, total=len(plan.splits[split]),
                                            disable=not progress):
        rows.append(manifest_row(split, plan, entry))
        if split == 'train':
          sums.add(pixels)
      write_manifest(folder / MANIFESTS[split], rows)
      counts[split] = len(rows)
    (folder / 'classes.txt').write_text(''.join(w + '\n' for w in plan.wnids))
    (folder / 'labels.json').write_text(json.dumps(plan.labels, indent=1) + '\n')
    stats = {'statistics_of': STATISTICS_OF, **sums.stats(), 'num_images': counts['train'],
             'alexnet_preprocessing': ALEXNET,
             'num_skipped': len(problems.skipped), 'skipped': problems.skipped}
    (folder / 'dataset_stats.json').write_text(json.dumps(stats, indent=1) + '\n')
  return counts


def read_stats(out_dir: str) -> dict:
  """An export's dataset_stats.json."""
  return json.loads((pathlib.Path(out_dir).expanduser() / 'dataset_stats.json').read_text())
