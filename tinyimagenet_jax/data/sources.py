"""Random-access data sources by name: TFDS (ArrayRecord), image folders, digits.

Every source is a grain-compatible sequence (`__len__`, `__getitem__`) whose
records are `{'image': uint8 HxWxC, 'label': int}`, plus `class_names`. Sources
are plain picklable objects so grain worker processes can use them. An image
file that cannot be read is a one-line DataError naming it, or, with
`data.skip_corrupt`, left out when the folder is listed, logged and recorded.
"""

from collections.abc import Callable, Sequence
import dataclasses
import importlib.util
import io
import os
import pathlib
import pickle
import re

from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import decoded_cache
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.errors import DataError
from tinyimagenet_jax.errors import UserError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Images and labels already in memory (small datasets, tests)."""

  images: np.ndarray  # N x H x W x C uint8
  labels: np.ndarray  # N int
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    return {'image': self.images[index], 'label': int(self.labels[index])}

  def name(self, index: int) -> str:
    """The example's position: in-memory images have no file name."""
    return str(index)


@dataclasses.dataclass(frozen=True)
class SubsetSource:
  """The records of `parent` at `indices`, in that order; with `relabel`, only the classes
  `kept` (config.data.classes), each parent label mapped to its position in `kept`.

  A view of its own because grain's MapDataset views slice by start:stop:step only
  and carry neither `class_names` nor `name(index)`.
  """

  parent: Sequence
  indices: np.ndarray
  relabel: np.ndarray | None = None
  kept: tuple[str, ...] = ()

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.kept or self.parent.class_names

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    record = self.parent[int(self.indices[index])]
    if self.relabel is None:
      return record
    return {'image': record['image'], 'label': int(self.relabel[int(record['label'])])}

  def name(self, index: int) -> str:
    """The parent's name of the example."""
    return self.parent.name(int(self.indices[index]))


UNREADABLE_FIX = ('remove or replace it, or set --config.data.skip_corrupt=True to skip'
                  ' unreadable images')
# What PIL raises for a file it cannot parse or decode (UnidentifiedImageError and
# truncation are OSErrors; some broken PNGs are SyntaxErrors).
PIL_ERRORS = (OSError, SyntaxError, ValueError)


def _pil_reason(error: BaseException, path: str) -> str:
  """PIL's one-line reason, without the path or in-memory file object (`<_io.BytesIO object
  at 0x...>`) that some of its messages repeat."""
  reason = _first_line(error).replace(f' {path!r}', '')
  return re.sub(r' <[\w.]+ object at 0x[0-9a-f]+>', '', reason)


def _decode(path: str) -> np.ndarray:
  """The image at `path` as uint8 RGB; PIL's own error if it cannot.

  The file is read in one call: PIL reading it from disk makes dozens of small reads.
  """
  with Image.open(io.BytesIO(pathlib.Path(path).read_bytes())) as image:
    return np.asarray(image.convert('RGB'))


def decode_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 RGB (greyscale and palette images converted).

  A file PIL cannot read is a DataError naming it, one line that reaches the
  user unchanged from a grain reader thread or worker process.
  """
  try:
    return _decode(path)
  except PIL_ERRORS as error:
    raise DataError(f'{path!r} is not a readable image ({_pil_reason(error, path)});'
                    f' {UNREADABLE_FIX}.') from error


def _ends_with_jpeg_eoi(path: str) -> bool:
  """Whether the file ends with the JPEG end-of-image marker (truncated ones do not)."""
  with open(path, 'rb') as file:
    file.seek(-2, os.SEEK_END)
    return file.read(2) == b'\xff\xd9'


def unreadable_reason(path: str) -> str | None:
  """Why PIL cannot read `path`, or None if it can.

  `verify()` checks the header (and a PNG's checksums) without decoding; it
  does nothing more for a JPEG, so one missing its end marker is decoded too.
  """
  try:
    with Image.open(path) as image:
      is_jpeg = image.format == 'JPEG'
      image.verify()
    if is_jpeg and not _ends_with_jpeg_eoi(path):
      _decode(path)
  except PIL_ERRORS as error:
    return _pil_reason(error, path)
  return None


@dataclasses.dataclass(frozen=True)
class ImageFolderSource:
  """`<root>/<split>/<class>/*.{jpg,jpeg,png}`; classes sorted by folder name.

  `skipped` lists the files left out as unreadable (skip_corrupt), else ().
  """

  paths: tuple[str, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]
  skipped: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    return {'image': decode_image(self.paths[index]),
            'label': int(self.labels[index])}

  def name(self, index: int) -> str:
    """The image's file name."""
    return os.path.basename(self.paths[index])

  def fingerprint(self) -> str:
    """Every file's path, size and modification time: a changed folder changes it."""
    stats = (os.stat(path) for path in self.paths)
    return '\n'.join(f'{path} {stat.st_size} {stat.st_mtime_ns}'
                     for path, stat in zip(self.paths, stats))


def _drop_unreadable(paths: list[str], labels: list[int], folder: pathlib.Path
                     ) -> tuple[list[str], list[int], tuple[str, ...]]:
  """(readable paths, their labels, unreadable paths); logs each unreadable one and the count."""
  kept, kept_labels, skipped = [], [], []
  for path, label in zip(paths, labels):
    reason = unreadable_reason(path)
    if reason is None:
      kept.append(path)
      kept_labels.append(label)
    else:
      logging.warning('Skipping unreadable image %r (%s).', path, reason)
      skipped.append(path)
  if skipped:
    logging.warning('Skipped %d unreadable image(s) of %d in %s.', len(skipped), len(paths),
                    folder)
  return kept, kept_labels, tuple(skipped)


def image_folder(root: str, split: str, skip_corrupt: bool = False) -> ImageFolderSource:
  """Lists `<root>/<split>` once, in sorted order, so indices are stable.

  With `skip_corrupt`, every file is checked once here and the unreadable ones
  are dropped, logged and listed in the source's `skipped`.
  """
  if not root or not pathlib.Path(root).expanduser().is_dir():
    raise DataError(
        f'config.data.root={root!r} is not a folder; set --config.data.root to the folder'
        ' holding <split>/<class>/*.jpg.')
  split_dir = pathlib.Path(root).expanduser() / split
  if not split_dir.is_dir():
    raise DataError(
        f'image folder {str(split_dir)!r} does not exist; set'
        ' --config.data.root to a folder holding <split>/<class>/*.jpg.'
    )
  class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
  paths, labels = [], []
  for label, class_dir in enumerate(class_dirs):
    files = sorted(
        f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
    )
    paths += [str(f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise DataError(
        f'image folder {str(split_dir)!r} holds no .jpg/.jpeg/.png files in'
        ' class subfolders; expected <split>/<class>/<image>.'
    )
  skipped = ()
  if skip_corrupt:
    paths, labels, skipped = _drop_unreadable(paths, labels, split_dir)
    if not paths:
      raise DataError(
          f'image folder {str(split_dir)!r} holds no readable image (all'
          f' {len(skipped)} are unreadable); replace them with images.')
  return ImageFolderSource(
      tuple(paths), np.asarray(labels, np.int32),
      tuple(d.name for d in class_dirs), skipped)


DIGITS_TEST_SIZE = 360  # 20% of scikit-learn's 1,797 digits


def digits_table() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 1,797 digits as (pixels (N, 8, 8) in 0..16, labels (N,)), read from the
  file `sklearn.datasets.load_digits` reads, without importing scikit-learn: with SciPy that
  import took 2 s of the quickstart's start-up."""
  spec = importlib.util.find_spec('sklearn')
  if spec is None or not spec.submodule_search_locations:
    raise DataError("the digits come with scikit-learn; pip install scikit-learn.")
  path = pathlib.Path(spec.submodule_search_locations[0], 'datasets', 'data', 'digits.csv.gz')
  table = np.loadtxt(path, delimiter=',', dtype=np.float64)
  return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)


def digits(split: str) -> ArraySource:
  """scikit-learn's bundled 8x8 digits: offline, seconds to train on.

  The 1,797 images get a fixed permutation (seed 0); the last 360 are 'test'.
  Pixels 0..16 are rescaled to 0..255 so all sources share one uint8 range.
  """
  if split not in ('train', 'test'):
    raise DataError(f"digits has splits 'train' and 'test', not {split!r}.")
  pixels, labels = digits_table()
  order = np.random.default_rng(0).permutation(len(labels))
  order = order[:-DIGITS_TEST_SIZE] if split == 'train' else order[-DIGITS_TEST_SIZE:]
  images = np.round(pixels[order] * (255 / 16)).astype(np.uint8)[..., None]
  return ArraySource(images, labels[order], tuple(str(d) for d in range(10)))


CIFAR100_FOLDER = 'cifar-100-python'


def _cifar_pickle(path: pathlib.Path, keys: tuple[bytes, ...]) -> dict:
  """The `keys` of one pickle of CIFAR's python version; a one-line DataError naming
  the file when it is missing or is not such a pickle."""
  try:
    with open(path, 'rb') as file:
      batch = pickle.load(file, encoding='bytes')
    return {key: batch[key] for key in keys}
  except FileNotFoundError as error:
    raise DataError(
        f'{str(path)!r} does not exist; set --config.data.root to the folder holding'
        f' {CIFAR100_FOLDER}/ (unpacked cifar-100-python.tar.gz), or use'
        ' --config.data.name=cifar100 (TFDS).') from error
  except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
          AttributeError) as error:
    raise DataError(
        f'{str(path)!r} is not a CIFAR-100 python pickle ({_first_line(error)}); replace it'
        ' with the file from cifar-100-python.tar.gz.') from error


def cifar100_python(root: str, split: str) -> ArraySource:
  """CIFAR-100 in its original python format, `<root>/cifar-100-python/{train,test,meta}`:
  the fine labels, named by `meta`; read without TFDS (offline, or a partial copy)."""
  if split not in ('train', 'test'):
    raise DataError(f"cifar100_python has splits 'train' and 'test', not {split!r}.")
  folder = pathlib.Path(root).expanduser() / CIFAR100_FOLDER
  batch = _cifar_pickle(folder / split, (b'data', b'fine_labels'))
  names = _cifar_pickle(folder / 'meta', (b'fine_label_names',))[b'fine_label_names']
  images = np.asarray(batch[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return ArraySource(np.ascontiguousarray(images), np.asarray(batch[b'fine_labels'], np.int32),
                     tuple(name.decode() for name in names))


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A `tfds.data_source` reduced to the image and label features."""

  records: Sequence
  class_names: tuple[str, ...]
  origin: str = ''  # the prepared dataset's folder and the split

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict:
    record = self.records[index]
    return {'image': record['image'], 'label': int(record['label'])}

  def name(self, index: int) -> str:
    """The image's file name when the dataset stores one (Tiny ImageNet), else its index."""
    file_name = self.records[index].get('file_name')
    if file_name is None:
      return str(index)
    return os.path.basename(file_name.decode() if isinstance(file_name, bytes) else file_name)

  def fingerprint(self) -> str:
    """The prepared dataset's folder (name, config, version) and the split."""
    return self.origin


def _first_line(error: BaseException) -> str:
  """The first line of an exception's message, for one-line errors."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def tensorflow_available() -> bool:
  """Whether TensorFlow, needed to build (not read) a TFDS dataset, is installed."""
  return importlib.util.find_spec('tensorflow') is not None


def tfds_source(name: str, split: str, data: ml_collections.ConfigDict) -> TfdsSource:
  """Reads the TFDS dataset `name` as ArrayRecord, preparing it first when allowed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(name, data_dir=data.data_dir or None, file_format='array_record')
  return prepared_source(builder, split, data)


def prepared_source(builder, split: str, data: ml_collections.ConfigDict) -> TfdsSource:
  """One split of a TFDS `builder`, downloading and preparing it first if allowed.

  Preparing (download + build) needs TensorFlow (the `build` extra) and, for
  most datasets, internet; reading a prepared dataset needs neither.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  name = builder.info.full_name.rsplit('/', 1)[0]
  where = f'data_dir={str(builder.data_dir_root)!r}'
  if not builder.is_prepared():
    if not data.download:
      raise DataError(
          f'TFDS dataset {name!r} is not prepared in {where} and'
          ' config.data.download is False; prepare it once online or point'
          ' --config.data.data_dir at a prepared copy.'
      )
    if not tensorflow_available():
      raise DataError(
          f'TFDS dataset {name!r} is not prepared in {where}; building it needs'
          " TensorFlow: pip install -e '.[build]' (online), or point"
          ' --config.data.data_dir at a prepared copy.'
      )
    manual_dir = data.manual_dir or None
    if manual_dir and not pathlib.Path(manual_dir).expanduser().is_dir():
      raise DataError(
          f'config.data.manual_dir={manual_dir!r} is not a folder; create it and put'
          f' the archives of {name!r} in it, or leave it empty to download them.')
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except UserError:
      raise  # already one sentence naming the bad file and the fix
    except Exception as error:  # pylint: disable=broad-except
      raise DataError(
          f'TFDS dataset {name!r} is not in {where} and could not be prepared'
          f' ({_first_line(error)}); go online, or put the archives in'
          ' --config.data.manual_dir, or set --config.data.data_dir to a'
          ' prepared copy.'
      ) from error
  try:
    records = builder.as_data_source(split=split)
  except (ValueError, KeyError) as error:
    raise DataError(
        f'TFDS dataset {name!r} cannot read split {split!r}'
        f' ({_first_line(error)}); check --config.data.train_split/eval_split.'
    ) from error
  return TfdsSource(records, tuple(builder.info.features['label'].names),
                    f'{builder.data_dir}:{split}')


def tiny_imagenet(data: ml_collections.ConfigDict, split: str,
                  unlabelled_ok: bool = False) -> TfdsSource:
  """Tiny ImageNet from the official archive: all 200 classes, or a seeded subset.

  `data.subset_classes=0` is the `full` config (its test split is unlabelled:
  evaluate on 'validation'); otherwise `data.subset_split` images per class
  (train, validation, test) of that many classes drawn with `data.subset_seed`.
  The builder package is imported only here, so importing this module stays light.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax.data import tiny_imagenet as tiny  # pylint: disable=g-import-not-at-top

  if not data.subset_classes and split == 'test' and not unlabelled_ok:
    raise DataError(
        "the full Tiny ImageNet 'test' split is unlabelled; evaluate on 'validation'"
        ' (--config.data.eval_split=validation) or use a subset'
        ' (--config.data.subset_classes=100).')
  config = (tiny.subset_config(data.subset_classes, *data.subset_split, seed=data.subset_seed)
            if data.subset_classes else 'full')
  builder = tfds.builder('tiny_imagenet', config=config, data_dir=data.data_dir or None,
                         file_format='array_record', skip_corrupt=data.skip_corrupt)
  return prepared_source(builder, split, data)


def _tfds(name: str) -> Callable[[ml_collections.ConfigDict, str], Sequence]:
  """A SOURCES entry reading the TFDS dataset `name`."""
  return lambda data, split: tfds_source(name, split, data)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict, str], Sequence]] = {
    'cifar10': _tfds('cifar10'),
    'cifar100': _tfds('cifar100'),
    'cifar100_python': lambda data, split: cifar100_python(data.root, split),
    'stl10': _tfds('stl10'),
    'mnist': _tfds('mnist'),
    'tiny_imagenet': tiny_imagenet,
    'image_folder': lambda data, split: image_folder(data.root, split, data.skip_corrupt),
    'digits': lambda data, split: digits(split),
}


def validate_source(data: ml_collections.ConfigDict) -> None:
  """ConfigError unless `data.name` names a registered source."""
  config_lib.one_of('data.name', data.name, SOURCES)


def validate_data(data: ml_collections.ConfigDict) -> None:
  """ConfigError for a bad validation size, Tiny ImageNet subset, class list or mean/std."""
  size = data.validation_size
  if size < 0 or (size >= 1 and int(size) != size):
    raise ConfigError(
        f'config.data.validation_size={size!r} must be a count (>= 1), a'
        ' fraction in (0, 1), or 0 for none.'
    )
  config_lib.require(
      config_lib.numbers(data.subset_split, 3), 'data.subset_split', data.subset_split,
      'three per-class image counts (train, validation, test), e.g. (300, 100, 100)')
  config_lib.require(
      config_lib.is_number(data.subset_classes) and data.subset_classes >= 0,
      'data.subset_classes', data.subset_classes,
      'a number of Tiny ImageNet classes, or 0 for all 200')
  classes = data.classes
  config_lib.require(
      isinstance(classes, (tuple, list)) and all(isinstance(name, str) and name
                                                 for name in classes)
      and len(set(classes)) == len(classes), 'data.classes', classes,
      "distinct class names to keep, e.g. ('car', 'deer'), or () for all classes")
  if len(data.mean) != len(data.std):
    raise ConfigError(
        f'config.data.mean={tuple(data.mean)} and config.data.std='
        f'{tuple(data.std)} must have one value per channel each.'
    )


def source_labels(source: Sequence) -> np.ndarray:
  """Every record's label: the source's `labels` array, else read record by record (TFDS)."""
  labels = getattr(source, 'labels', None)
  if labels is None:
    labels = [int(source[index]['label']) for index in range(len(source))]
  return np.asarray(labels, np.int64)


def keep_classes(source: Sequence, names: Sequence[str], dataset: str) -> Sequence:
  """`source` reduced to the classes `names` (config.data.classes), relabelled 0..K-1
  in that order; `source` itself when `names` is empty."""
  if not names:
    return source
  unknown = [name for name in names if name not in source.class_names]
  if unknown:
    raise DataError(
        f'config.data.classes has {unknown[0]!r}, which is not a class of {dataset!r};'
        f' valid class names: {", ".join(source.class_names)}.')
  relabel = np.full(len(source.class_names), -1, np.int64)
  relabel[[source.class_names.index(name) for name in names]] = np.arange(len(names))
  indices = np.flatnonzero(relabel[source_labels(source)] >= 0)
  if not len(indices):
    raise DataError(f'{dataset!r} holds no image of config.data.classes={tuple(names)!r} in'
                    ' this split; choose classes that occur in it.')
  return SubsetSource(source, indices, relabel, tuple(names))


def load(data: ml_collections.ConfigDict, split: str,
         check: Callable[[Sequence], None] = lambda source: None) -> Sequence:
  """The source named by `data.name` for one split, read from its decoded cache if
  `data.decoded_cache`, reduced to `data.classes` if given. `check(source)` sees the
  split as listed and reduced, before any image is decoded into the cache."""
  listed = SOURCES[data.name](data, split)
  kept = keep_classes(listed, data.classes, data.name)
  check(kept)
  if not data.decoded_cache:
    return kept
  cached = decoded_cache.decoded(listed, data.cache_dir)
  # The class subset's indices are the listing's: the same view over the cached pixels.
  return dataclasses.replace(kept, parent=cached) if kept is not listed else cached


def load_for_prediction(data: ml_collections.ConfigDict, split: str) -> Sequence:
  """One split to predict on, which may be unlabelled (the full Tiny ImageNet test)."""
  if data.name == 'tiny_imagenet':
    return tiny_imagenet(data, split, unlabelled_ok=True)
  return load(data, split)


def validation_count(validation_size: float, num_examples: int) -> int:
  """A validation size given as a count or a fraction, as a count."""
  if validation_size >= 1:
    count = int(validation_size)
  else:
    count = round(validation_size * num_examples)
  if count >= num_examples:
    raise DataError(
        f'config.data.validation_size={validation_size} leaves no training'
        f' examples out of {num_examples}; use a smaller count or fraction.'
    )
  return count


def split_off_validation(
    source: Sequence, validation_size: float, seed: int
) -> tuple[Sequence, Sequence]:
  """Carves a validation split from `source` with a seeded permutation.

  Returns (train, validation); together they hold each record exactly once.
  """
  count = validation_count(validation_size, len(source))
  order = np.random.default_rng(seed).permutation(len(source))
  return (SubsetSource(source, np.sort(order[count:])),
          SubsetSource(source, np.sort(order[:count])))



@dataclasses.dataclass(frozen=True)
class Splits:
  """The training source and the named evaluation sources of one run."""

  train: Sequence
  evals: dict[str, Sequence]

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.train.class_names


def check_batch_fits(batch_size: int, num_examples: int) -> None:
  """ConfigError unless one batch of `batch_size` fits in `num_examples` training examples."""
  if batch_size > num_examples:
    raise ConfigError(
        f'config.batch_size={batch_size} is larger than the'
        f' {num_examples} training examples; use a smaller batch.')


def training_count(data: ml_collections.ConfigDict, num_examples: int) -> int:
  """The training examples left of `num_examples` once the validation split is carved."""
  return num_examples - (validation_count(data.validation_size, num_examples)
                         if data.validation_size else 0)


def load_splits(data: ml_collections.ConfigDict, seed: int, batch_size: int = 0) -> Splits:
  """Train and eval sources from `data`, the eval sources named by their split: 'val' carved
  from train if asked, and `data.eval_split` (metrics are then `val_top1`,
  `validation_top1`, `test_top1`...: the split they were computed on).

  The eval split is opened first, so a wrong one (such as the unlabelled full
  Tiny ImageNet 'test') fails before the training data is prepared or checked.
  """
  test = load(data, data.eval_split)
  train = load(data, data.train_split, lambda source: check_batch_fits(
      batch_size, training_count(data, len(source))))
  evals = {}
  if data.validation_size:
    train, evals['val'] = split_off_validation(train, data.validation_size, seed)
  evals[data.eval_split] = test
  return Splits(train, evals)


def image_shape(source: Sequence) -> tuple[int, ...]:
  """One image's (height, width, channels), read from metadata where the source has it
  (an array's shape, TFDS's feature spec, an image file's header), so building a run
  decodes nothing; views delegate to the source they view."""
  if isinstance(source, ArraySource):
    return tuple(source.images.shape[1:])
  if isinstance(source, ImageFolderSource):
    with Image.open(source.paths[0]) as image:  # reads the header only
      return (image.height, image.width, 3)  # decode_image converts to RGB
  if isinstance(source, TfdsSource):
    shape = source.records.dataset_info.features['image'].shape
    if all(shape):
      return tuple(shape)
  if isinstance(source, decoded_cache.DecodedSource):
    return tuple(np.load(source.path, mmap_mode='r').shape[1:])
  parent = getattr(source, 'parent', None)
  if parent is not None:
    return image_shape(parent)
  return tuple(source[0]['image'].shape)
