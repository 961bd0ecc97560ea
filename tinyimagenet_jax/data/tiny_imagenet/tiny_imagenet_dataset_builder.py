"""The `tiny_imagenet` TFDS builder: the official CS231n archive, full or a seeded subset.

Configs: `full` (train 100,000 / validation 10,000 / test 10,000 unlabelled,
200 classes in wnids.txt order), `subset100` (the first report's 100 classes,
300/100/100 images per class from the training images, seed 0), and any other
subset from `subset_config(num_classes, train, validation, test, seed)`; see
`selection` for how classes and images are drawn.

The archive is looked for in the manual_dir, as the extracted
`tiny-imagenet-200/` folder (or manual_dir itself being it),
`tiny-imagenet-200.zip`, `tiny-imagenet-200.tar.gz` or `tiny-imagenet-200.tgz`;
without one the official .zip is downloaded.

Features: `image` (64x64x3 uint8; greyscale JPEGs become RGB), `label`
(ClassLabel over the config's wnids), `has_label` (False only for the full
config's unlabelled test images, whose `label` is 0, `class_name` '' and boxes
zero: read those only where has_label), `class_name` (words.txt),
`bbox_pixels` (x1, y1, x2, y2 inclusive pixel corners, int32), `bbox`
(tfds BBox: ymin, xmin, ymax, xmax as fractions, pixel edges) and `file_name`
(the path inside the tiny-imagenet-200 tree, e.g. 'val/images/val_0.JPEG').

Bad images or annotation lines raise a one-sentence DataError naming them.
`tfds.builder('tiny_imagenet', ..., skip_corrupt=True)` (a builder argument:
it changes what a broken archive yields, not the dataset's identity) skips and
logs them instead, and records them in `builder.info.metadata` (metadata.json
beside the data): {'skip_corrupt': bool, 'num_skipped': int, 'skipped':
['<file>[ line <n>]: <what is wrong>', ...]}.
"""

import dataclasses
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tinyimagenet_jax.data.tiny_imagenet import archive as archive_lib
from tinyimagenet_jax.data.tiny_imagenet import examples
from tinyimagenet_jax.data.tiny_imagenet import selection
from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.errors import DataError

NUM_CLASSES = 200
IMAGES_PER_CLASS = 500


@dataclasses.dataclass(eq=False)
class TinyImagenetConfig(tfds.core.BuilderConfig):
  """`num_classes=0`: the full dataset; otherwise a seeded subset of the train images."""

  num_classes: int = 0
  split_sizes: tuple[int, int, int] = (0, 0, 0)  # per class: train, validation, test
  seed: int = 0


FULL = TinyImagenetConfig(
    name='full', description='All 200 classes with the official splits; test is unlabelled.')
SUBSET100 = TinyImagenetConfig(
    name='subset100', num_classes=100, split_sizes=(300, 100, 100), seed=0,
    description='100 classes drawn with seed 0; 300/100/100 train images per class'
    ' as train/validation/test (30,000/10,000/10,000).')


def subset_config(num_classes: int, train: int, validation: int, test: int,
                  seed: int) -> TinyImagenetConfig:
  """The subset config of these parameters, named after them (predefined if it exists)."""
  sizes = (train, validation, test)
  possible = (0 < num_classes <= NUM_CLASSES and train >= 1 and min(sizes) >= 0
              and sum(sizes) <= IMAGES_PER_CLASS and seed >= 0)
  if not possible:
    raise ConfigError(
        f'a Tiny ImageNet subset of {num_classes} classes, {sizes} train/validation/'
        f'test images per class and seed {seed} is impossible; use 1 to'
        f' {NUM_CLASSES} classes, at least 1 train image, at most'
        f' {IMAGES_PER_CLASS} images per class in all, and a seed >= 0.')
  for config in (SUBSET100,):
    if (config.num_classes, config.split_sizes, config.seed) == (num_classes, sizes, seed):
      return config
  return TinyImagenetConfig(
      name=f'subset{num_classes}_{train}_{validation}_{test}_seed{seed}',
      num_classes=num_classes, split_sizes=sizes, seed=seed,
      description=f'{num_classes} classes drawn with seed {seed};'
      f' {train}/{validation}/{test} train images per class as train/validation/test.')


class Builder(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet (CS231n) from the official archive, full or a seeded subset."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Full and seeded-subset configs from the official archive.'}
  BUILDER_CONFIGS = [FULL, SUBSET100]
  DEFAULT_CONFIG_NAME = 'full'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Optional (otherwise {archive_lib.URL} is downloaded): put'
      f' {archive_lib.ROOT}.zip, a .tar.gz/.tgz of it, or the extracted'
      f' {archive_lib.ROOT}/ folder in the manual_dir.')

  def __init__(self, *, skip_corrupt: bool = False, **kwargs):
    """`skip_corrupt`: skip, log and record bad images and lines instead of raising."""
    self._skip_corrupt = skip_corrupt
    self._skipped: list[str] = []
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    """Features for the config's classes; label names come from the archive's wnids."""
    num_classes = self.builder_config.num_classes or NUM_CLASSES
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=examples.SHAPE),
            'label': tfds.features.ClassLabel(num_classes=num_classes,
                                              doc='Class id; names are the wnids.'),
            'has_label': tfds.features.Scalar(
                np.bool_, doc='False for the unlabelled test images of `full`.'),
            'class_name': tfds.features.Text(doc="The class's names in words.txt."),
            'bbox_pixels': tfds.features.Tensor(
                shape=(4,), dtype=np.int32, doc='x1, y1, x2, y2, inclusive pixels.'),
            'bbox': tfds.features.BBoxFeature(),
            'file_name': tfds.features.Text(doc='Path inside tiny-imagenet-200/.'),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
        metadata=tfds.core.MetadataDict(),
    )

  def _archive_path(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """The tree or archive in the manual_dir, else the downloaded official .zip."""
    try:
      manual_dir = pathlib.Path(os.fspath(dl_manager.manual_dir))
    except AssertionError:  # TFDS's way of saying: no manual_dir, or an empty one
      manual_dir = None
    found = archive_lib.find_in_manual_dir(manual_dir) if manual_dir else None
    if found:
      return found
    return pathlib.Path(os.fspath(dl_manager.download(archive_lib.URL)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Reads the archive once into a plan, then one generator per split."""
    tree = archive_lib.open_archive(self._archive_path(dl_manager))
    problems = Problems(tree.location, self._skip_corrupt, self._skipped)
    config = self.builder_config
    plan = selection.make_plan(tree, config.num_classes, config.split_sizes,
                               config.seed, problems)
    label = self.info.features['label']
    if len(plan.wnids) != label.num_classes:
      raise DataError(
          f'Tiny ImageNet archive {tree.location} lists {len(plan.wnids)} wnids, not'
          f' {label.num_classes}; download it again from {archive_lib.URL}.')
    label.names = list(plan.wnids)
    return {split: self._generate_examples(tree, plan, split, problems)
            for split in selection.SPLITS}

  def _generate_examples(self, tree, plan: selection.Plan, split: str, problems: Problems):
    """(file name, features) for each image of `split` that decodes."""
    for entry, pixels in examples.read_images(tree, plan.splits[split], problems):
      yield entry.path, record(plan, entry, pixels)

  def _download_and_prepare(self, dl_manager, download_config):
    """Generates the splits, then records what skip_corrupt skipped in the metadata."""
    super()._download_and_prepare(dl_manager, download_config)
    self.info.metadata.update(skip_corrupt=self._skip_corrupt,
                              num_skipped=len(self._skipped), skipped=list(self._skipped))


def record(plan: selection.Plan, entry: selection.Entry, pixels: np.ndarray) -> dict:
  """The feature dict of one image (see the module docstring for unlabelled ones)."""
  common = {'image': pixels, 'file_name': entry.path}
  if entry.wnid is None:
    return {**common, 'label': 0, 'has_label': False, 'class_name': '',
            'bbox_pixels': np.zeros(4, np.int32), 'bbox': np.zeros(4, np.float32)}
  box, label = entry.box, plan.labels[entry.wnid]
  return {**common, 'label': label, 'has_label': True, 'class_name': plan.words[label],
          'bbox_pixels': np.array([box.x1, box.y1, box.x2, box.y2], np.int32),
          'bbox': np.array(box.normalized(), np.float32)}
