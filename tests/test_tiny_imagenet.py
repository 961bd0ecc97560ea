"""Tiny ImageNet on the real archive: parsing, subsets, the TFDS builder, export, bad input."""

import collections
import csv
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data.tiny_imagenet import archive
from tinyimagenet_jax.data.tiny_imagenet import artifacts
from tinyimagenet_jax.data.tiny_imagenet import examples
from tinyimagenet_jax.data.tiny_imagenet import selection
from tinyimagenet_jax.data.tiny_imagenet import tiny_imagenet_dataset_builder as builder_lib
from tinyimagenet_jax.data.tiny_imagenet.problems import FIX
from tinyimagenet_jax.data.tiny_imagenet.problems import Problems
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.errors import DataError
from tinyimagenet_jax.experiments import tiny_ensembles

from helpers import REPO
from helpers import run_python
from helpers import shared_archive

SPLITS = ('train', 'validation', 'test')
SUBSET5 = {'num_classes': 5, 'train': 20, 'validation': 5, 'test': 5, 'seed': 0}


# Independent readers of the original files: plain string and PIL operations.

def tab_lines(path: pathlib.Path) -> list[list[str]]:
  return [line.split('\t') for line in path.read_text().splitlines() if line]


def wnids_of(root: pathlib.Path) -> list[str]:
  return (root / 'wnids.txt').read_text().split()


def words_of(root: pathlib.Path) -> dict[str, str]:
  return dict(tab_lines(root / 'words.txt'))


def boxes_of(root: pathlib.Path, wnid: str) -> dict[str, tuple[int, ...]]:
  """File name -> (x1, y1, x2, y2) from train/<wnid>/<wnid>_boxes.txt."""
  lines = tab_lines(root / 'train' / wnid / f'{wnid}_boxes.txt')
  return {f: tuple(map(int, xs)) for f, *xs in lines}


def val_annotations_of(root: pathlib.Path) -> dict[str, tuple[str, tuple[int, ...]]]:
  lines = tab_lines(root / 'val' / 'val_annotations.txt')
  return {f: (w, tuple(map(int, xs))) for f, w, *xs in lines}


def pil_rgb(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))


def documented_subset(root, num_classes, sizes, seed):
  """The selection the builder documents, computed here from the folder listing."""
  rng = np.random.default_rng(seed)
  wnids = wnids_of(root)
  chosen = [wnids[i] for i in sorted(rng.choice(len(wnids), num_classes, replace=False))]
  splits = {s: set() for s in SPLITS}
  for wnid in chosen:
    files = sorted(p.name for p in (root / 'train' / wnid / 'images').iterdir())
    order, start = rng.permutation(len(files)), 0
    for split, size in zip(SPLITS, sizes):
      splits[split] |= {f'train/{wnid}/images/{files[i]}' for i in order[start:start + size]}
      start += size
  return chosen, splits


def text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def run_export(*args: str) -> subprocess.CompletedProcess:
  """Runs the export command in a fresh interpreter from the repo root."""
  return subprocess.run([sys.executable, '-m', 'tinyimagenet_jax.data.tiny_imagenet.export', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def build(config, manual_dir, data_dir, **kwargs):
  builder = builder_lib.Builder(config=config, data_dir=str(data_dir),
                                file_format='array_record', **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read_all(builder) -> dict[str, list[dict]]:
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def copy_tree(src: pathlib.Path, dst: pathlib.Path, wnids: list[str], per_class: int | None = None,
              val_images: int | None = None, test_images: int = 3) -> pathlib.Path:
  """A smaller real tree at dst/tiny-imagenet-200: these classes, their boxes and val lines."""
  root = dst / 'tiny-imagenet-200'
  (root / 'val' / 'images').mkdir(parents=True)
  (root / 'test' / 'images').mkdir(parents=True)
  (root / 'wnids.txt').write_text(''.join(w + '\n' for w in wnids))
  shutil.copy(src / 'words.txt', root / 'words.txt')
  for wnid in wnids:
    files = sorted(p.name for p in (src / 'train' / wnid / 'images').iterdir())[:per_class]
    (root / 'train' / wnid / 'images').mkdir(parents=True)
    for f in files:
      shutil.copy(src / 'train' / wnid / 'images' / f, root / 'train' / wnid / 'images' / f)
    lines = [l for l in (src / 'train' / wnid / f'{wnid}_boxes.txt').read_text().splitlines()
             if l.split('\t')[0] in files]
    (root / 'train' / wnid / f'{wnid}_boxes.txt').write_text('\n'.join(lines) + '\n')
  val = [l for l in (src / 'val' / 'val_annotations.txt').read_text().splitlines()
         if l.split('\t')[1] in wnids][:val_images]
  (root / 'val' / 'val_annotations.txt').write_text('\n'.join(val) + '\n')
  for line in val:
    shutil.copy(src / 'val' / 'images' / line.split('\t')[0], root / 'val' / 'images')
  for f in sorted((src / 'test' / 'images').iterdir())[:test_images]:
    shutil.copy(f, root / 'test' / 'images')
  return root


def zip_tree(root: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
  """The tree as the official zip lays it out: members under tiny-imagenet-200/."""
  with zipfile.ZipFile(path, 'w') as z:
    for f in sorted(root.rglob('*')):
      if f.is_file():
        z.write(f, f'tiny-imagenet-200/{f.relative_to(root).as_posix()}')
  return path


@pytest.fixture(scope='module')
def subset5(tiny_root, tmp_path_factory):
  """The 5-class 20/5/5 subset (seed 0) built from the extracted folder, and its records."""
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = build(builder_lib.subset_config(**SUBSET5), tiny_root.parent, data_dir)
  return builder, read_all(builder)


def full_plan(tree, skip=False):
  problems = Problems(tree.location, skip)
  return selection.make_plan(tree, 0, (0, 0, 0), 0, problems), problems


def test_full_plan_matches_the_annotation_files(tiny_root):
  plan, problems = full_plan(archive.open_archive(tiny_root))
  wnids = wnids_of(tiny_root)
  assert len(wnids) == 200 and plan.wnids == tuple(wnids)
  assert {s: len(e) for s, e in plan.splits.items()} == {
      'train': 100_000, 'validation': 10_000, 'test': 10_000}
  assert collections.Counter(e.wnid for e in plan.splits['train']) == {w: 500 for w in wnids}
  train_boxes = {(e.wnid, e.path.rsplit('/', 1)[1]): dataclasses.astuple(e.box)
                 for e in plan.splits['train']}
  assert train_boxes == {(w, f): box for w in wnids for f, box in boxes_of(tiny_root, w).items()}
  val = {e.path.rsplit('/', 1)[1]: (e.wnid, dataclasses.astuple(e.box))
         for e in plan.splits['validation']}
  assert val == val_annotations_of(tiny_root)
  assert all(e.path.startswith('test/images/') and e.wnid is None and e.box is None
             for e in plan.splits['test'])
  words = words_of(tiny_root)
  assert plan.words == tuple(words[w] for w in wnids)
  assert problems.skipped == []


def test_subset_plans_follow_the_documented_seeded_draws(tiny_root):
  tree = archive.open_archive(tiny_root)

  def plan_of(num_classes, sizes, seed):
    return selection.make_plan(tree, num_classes, sizes, seed, Problems(tree.location, False))

  plan = plan_of(5, (20, 5, 5), 0)
  chosen, splits = documented_subset(tiny_root, 5, (20, 5, 5), 0)
  assert plan.wnids == tuple(chosen) and plan.wnids != tuple(wnids_of(tiny_root)[:5])
  assert {s: {e.path for e in plan.splits[s]} for s in SPLITS} == splits
  assert plan_of(5, (20, 5, 5), 0) == plan
  other = plan_of(5, (20, 5, 5), 1)
  assert other.wnids != plan.wnids and other.splits['train'] != plan.splits['train']
  report = plan_of(100, (300, 100, 100), 0)
  assert {s: len(e) for s, e in report.splits.items()} == {
      'train': 30_000, 'validation': 10_000, 'test': 10_000}
  for split, size in zip(SPLITS, (300, 100, 100)):
    assert collections.Counter(e.wnid for e in report.splits[split]) == {
        w: size for w in report.wnids}
  paths = [e.path for s in SPLITS for e in report.splits[s]]
  assert len(set(paths)) == 50_000


def test_subset_configs_are_named_by_their_parameters():
  assert builder_lib.subset_config(100, 300, 100, 100, 0) is builder_lib.SUBSET100
  config = builder_lib.subset_config(**SUBSET5)
  assert (config.name, config.num_classes, config.split_sizes, config.seed) == (
      'subset5_20_5_5_seed0', 5, (20, 5, 5), 0)
  assert builder_lib.subset_config(5, 20, 5, 5, 1).name == 'subset5_20_5_5_seed1'
  with pytest.raises(ConfigError, match=r'subset of 5 classes, \(400, 100, 1\) .* is impossible'):
    builder_lib.subset_config(5, 400, 100, 1, 0)


def test_built_subset_holds_the_original_images_labels_and_boxes(subset5, tiny_root):
  builder, records = subset5
  chosen, splits = documented_subset(tiny_root, 5, (20, 5, 5), 0)
  assert builder.info.features['label'].names == chosen
  assert {s: len(r) for s, r in records.items()} == {'train': 100, 'validation': 25, 'test': 25}
  assert dict(builder.info.metadata) == {'skip_corrupt': False, 'num_skipped': 0, 'skipped': []}
  words = words_of(tiny_root)
  for split, size in zip(SPLITS, (20, 5, 5)):
    names = {text(r['file_name']) for r in records[split]}
    assert names == splits[split]
    labels = collections.Counter(int(r['label']) for r in records[split])
    assert labels == {i: size for i in range(5)}
    for r in records[split]:
      path = text(r['file_name'])
      wnid = path.split('/')[1]
      assert int(r['label']) == chosen.index(wnid) and bool(r['has_label'])
      assert text(r['class_name']) == words[wnid]
      box = boxes_of(tiny_root, wnid)[path.rsplit('/', 1)[1]]
      assert tuple(r['bbox_pixels']) == box
      x1, y1, x2, y2 = box
      np.testing.assert_allclose(r['bbox'], [y1 / 64, x1 / 64, (y2 + 1) / 64, (x2 + 1) / 64],
                                 rtol=1e-6)
      assert r['image'].dtype == np.uint8
      np.testing.assert_array_equal(r['image'], pil_rgb(tiny_root / path))


def test_zip_build_reads_members_in_place(tiny_root, tmp_path):
  wnids = wnids_of(tiny_root)[40:44]
  small = copy_tree(tiny_root, tmp_path / 'tree', wnids, per_class=30, val_images=8)
  manual = tmp_path / 'manual'
  manual.mkdir()
  zip_tree(small, manual / 'tiny-imagenet-200.zip')
  builder = build(builder_lib.subset_config(2, 10, 3, 3, 5), manual, tmp_path / 'tfds')
  records = read_all(builder)
  chosen, splits = documented_subset(small, 2, (10, 3, 3), 5)
  assert builder.info.features['label'].names == chosen
  assert {s: {text(r['file_name']) for r in records[s]} for s in SPLITS} == splits
  assert {s: len(r) for s, r in records.items()} == {'train': 20, 'validation': 6, 'test': 6}
  for r in records['train'] + records['validation'] + records['test']:
    path = text(r['file_name'])
    np.testing.assert_array_equal(r['image'], pil_rgb(small / path))
    assert tuple(r['bbox_pixels']) == boxes_of(small, path.split('/')[1])[path.rsplit('/', 1)[1]]


def test_tgz_reader_lists_and_reads_what_the_folder_holds(tiny_root):
  tgz = archive.open_archive(shared_archive('tiny-imagenet-200.tgz'))
  folder = archive.open_archive(tiny_root)
  assert len(tgz.names) == 120_203 and tgz.names == folder.names
  assert tgz.read_text('val/val_annotations.txt') == folder.read_text('val/val_annotations.txt')
  problems = Problems(tgz.location, False)
  plan = selection.make_plan(tgz, 5, (20, 5, 5), 0, problems)
  assert plan == selection.make_plan(folder, 5, (20, 5, 5), 0, problems)
  read = dict(examples.read_images(tgz, plan.splits['test'], problems))
  assert len(read) == 25
  for entry, pixels in read.items():
    np.testing.assert_array_equal(pixels, pil_rgb(tiny_root / entry.path))


def test_export_matches_an_independent_computation(subset5, tiny_root, tmp_path):
  out = tmp_path / 'export'
  result = run_export(f'--archive={tiny_root}', f'--out={out}', '--num_classes=5',
                      '--split=20,5,5', '--seed=0')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'train 100, validation 25, test 25 images' in result.stdout
  _, records = subset5
  chosen, _ = documented_subset(tiny_root, 5, (20, 5, 5), 0)
  assert (out / 'classes.txt').read_text() == ''.join(w + '\n' for w in chosen)
  assert json.loads((out / 'labels.json').read_text()) == {w: i for i, w in enumerate(chosen)}
  words = words_of(tiny_root)
  manifests = {}
  for split, name in zip(SPLITS, ('train_manifest.csv', 'val_manifest.csv', 'test_manifest.csv')):
    with (out / name).open(newline='') as f:
      rows = list(csv.DictReader(f))
    manifests[split] = rows
    built = sorted(text(r['file_name']) for r in records[split])
    assert [r['relative_path'] for r in rows] == built
    for row in rows:
      wnid = row['relative_path'].split('/')[1]
      box = boxes_of(tiny_root, wnid)[row['relative_path'].rsplit('/', 1)[1]]
      assert row == {'split': split, 'relative_path': row['relative_path'], 'class_name': wnid,
                     'class_id': str(chosen.index(wnid)), 'bbox_x1': str(box[0]),
                     'bbox_y1': str(box[1]), 'bbox_x2': str(box[2]), 'bbox_y2': str(box[3]),
                     'words': words[wnid]}
  pixels = np.stack([pil_rgb(tiny_root / r['relative_path']) for r in manifests['train']])
  pixels = pixels.reshape(-1, 3).astype(np.float64) / 255
  stats = json.loads((out / 'dataset_stats.json').read_text())
  np.testing.assert_allclose(stats['mean'], pixels.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats['std'], pixels.std(0), rtol=1e-9)
  assert (stats['pixel_count'], stats['num_images']) == (100 * 64 * 64, 100)
  assert stats['alexnet_preprocessing'] == {'resize_shorter': 256, 'crop_size': 224}
  assert stats['statistics_of'].startswith('the training images as stored (64x64 RGB)')
  assert 'resize_shorter' not in stats and 'crop_size' not in stats
  assert (stats['num_skipped'], stats['skipped']) == (0, [])


def test_export_of_a_missing_archive_is_one_line(tmp_path):
  result = run_export(f'--archive={tmp_path}/nowhere.zip', f'--out={tmp_path}/out',
                      '--config=subset100')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: Tiny ImageNet archive '{tmp_path}/nowhere.zip' does not exist; pass the path of"
      ' tiny-imagenet-200.zip, a .tar.gz/.tgz of it, or its extracted folder.')


def test_unlabelled_test_images_have_empty_manifest_class_columns():
  plan = selection.Plan(('n1',), ('one',), {})
  row = artifacts.manifest_row('test', plan, selection.Entry('test/images/test_7.JPEG', None, None))
  assert row == {'split': 'test', 'relative_path': 'test/images/test_7.JPEG', **{
      c: '' for c in artifacts.COLUMNS[2:]}}


# Bad input: each case breaks a copy of a small real tree and returns what must be
# skipped, as '<where>: <what>' entries in the order they are found.

def first_image(root, wnid):
  return sorted((root / 'train' / wnid / 'images').iterdir())[0]


def rewrite_line(path: pathlib.Path, number: int, edit) -> str:
  """Replaces line `number` (1-based) with edit(fields); returns its file name field."""
  lines = path.read_text().splitlines()
  fields = lines[number - 1].split('\t')
  lines[number - 1] = '\t'.join(edit(fields))
  path.write_text('\n'.join(lines) + '\n')
  return fields[0]


def truncated_jpeg(root, wnid):
  image = first_image(root, wnid)
  data = image.read_bytes()
  image.write_bytes(data[:len(data) // 2])
  return [f'train/{wnid}/images/{image.name}: cannot be decoded (']


def garbage_jpeg(root, wnid):
  image = first_image(root, wnid)
  image.write_bytes(b'this is not a JPEG' * 50)
  return [f'train/{wnid}/images/{image.name}: is not an image file']


def small_image(root, wnid):
  image = first_image(root, wnid)
  Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(image, format='JPEG')
  return [f'train/{wnid}/images/{image.name}: is 48x32 pixels, expected 64x64']


def boxes_line_with_4_fields(root, wnid):
  boxes = f'train/{wnid}/{wnid}_boxes.txt'
  file = rewrite_line(root / boxes, 3, lambda f: f[:4])
  return [f'{boxes} line 3: has 4 tab-separated fields, expected 5 (file, x1, y1, x2, y2)',
          f'train/{wnid}/images/{file}: has no line in {boxes}']


def non_integer_coordinate(root, wnid):
  boxes = f'train/{wnid}/{wnid}_boxes.txt'
  file = rewrite_line(root / boxes, 2, lambda f: [f[0], f[1], '1.5', f[3], f[4]])
  fields = (root / boxes).read_text().splitlines()[1].split('\t')[1:]
  return [f'{boxes} line 2: has a non-integer coordinate in {fields}',
          f'train/{wnid}/images/{file}: has no line in {boxes}']


def box_outside_the_image(root, wnid):
  boxes = f'train/{wnid}/{wnid}_boxes.txt'
  file = rewrite_line(root / boxes, 1, lambda f: [f[0], f[1], f[2], '64', f[4]])
  fields = (root / boxes).read_text().splitlines()[0].split('\t')[1:]
  return [f'{boxes} line 1: has box {fields} outside the 64x64 image (need 0 <= x1 <= x2 <= 63,'
          ' the same for y)', f'train/{wnid}/images/{file}: has no line in {boxes}']


def missing_boxes_line(root, wnid):
  boxes = root / 'train' / wnid / f'{wnid}_boxes.txt'
  lines = boxes.read_text().splitlines()
  boxes.write_text('\n'.join(lines[1:]) + '\n')
  return [f'train/{wnid}/images/{lines[0].split()[0]}: has no line in'
          f' train/{wnid}/{wnid}_boxes.txt']


def unknown_wnid_in_val_annotations(root, wnid):
  del wnid
  file = rewrite_line(root / 'val' / 'val_annotations.txt', 4,
                      lambda f: [f[0], 'n00000000', *f[2:]])
  return ["val/val_annotations.txt line 4: names wnid 'n00000000', which is not in wnids.txt",
          f'val/images/{file}: has no line in val/val_annotations.txt']


def unknown_train_folder(root, wnid):
  (root / 'train' / 'n00000000' / 'images').mkdir(parents=True)
  shutil.copy(first_image(root, wnid), root / 'train' / 'n00000000' / 'images' / 'x.JPEG')
  return ["train/n00000000/: is the folder of wnid 'n00000000', which is not in wnids.txt"
          ' (1 image(s))']


BAD_INPUT = [truncated_jpeg, garbage_jpeg, small_image, boxes_line_with_4_fields,
             non_integer_coordinate, box_outside_the_image, missing_boxes_line,
             unknown_wnid_in_val_annotations, unknown_train_folder]


@pytest.fixture
def small_tree(tiny_root, tmp_path) -> pathlib.Path:
  """3 real classes of 12 images each, their 150 val images, 3 test images."""
  return copy_tree(tiny_root, tmp_path, wnids_of(tiny_root)[10:13], per_class=12)


def scan(root: pathlib.Path, skip: bool):
  """The full plan of the tree and every image it decodes, as the builder reads them."""
  tree = archive.open_archive(root)
  plan, problems = full_plan(tree, skip)
  kept = [e.path for s in SPLITS for e, _ in examples.read_images(tree, plan.splits[s], problems)]
  return problems.skipped, kept


def matches(entries: list[str], expected: list[str]) -> bool:
  """Equal, except that an expected entry ending in '(' is a prefix (PIL's own words)."""
  return len(entries) == len(expected) and all(
      e.startswith(x) if x.endswith('(') else e == x for e, x in zip(entries, expected))


@pytest.mark.parametrize('case', BAD_INPUT, ids=lambda c: c.__name__)
def test_bad_input_is_one_clear_error_or_skipped_and_recorded(case, small_tree):
  _, intact = scan(small_tree, skip=False)
  expected = case(small_tree, wnids_of(small_tree)[1])
  with pytest.raises(DataError) as error:
    scan(small_tree, skip=False)
  where, what = expected[0].split(': ', 1)
  message = str(error.value)
  assert '\n' not in message
  if what.endswith('('):
    assert message.startswith(f'Tiny ImageNet {where} in {small_tree} {what}')
    assert message.endswith(f'); {FIX}.')
  else:
    assert message == f'Tiny ImageNet {where} in {small_tree} {what}; {FIX}.'
  skipped, kept = scan(small_tree, skip=True)
  assert matches(skipped, expected), skipped
  wheres = [e.split(': ', 1)[0] for e in skipped]
  dropped = {w for w in wheres if w.lower().endswith('.jpeg')}  # images, not lines or folders
  assert set(kept) == set(intact) - dropped and len(kept) == len(intact) - len(dropped)


def tiny_data(data_dir, manual_dir, skip_corrupt=False):
  data = config_lib.base_config().data
  data.name = 'tiny_imagenet'
  data.data_dir, data.manual_dir = str(data_dir), str(manual_dir)
  data.subset_classes, data.subset_split, data.subset_seed = 3, (10, 1, 1), 0
  data.skip_corrupt = skip_corrupt
  return data


def load_error(data) -> str:
  """The one-line DataError that loading the train split raises."""
  with pytest.raises(DataError) as error:
    sources.load(data, 'train')
  assert '\n' not in str(error.value)
  return str(error.value)


def folder_bytes(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file under `folder` by relative path, with its bytes."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob('*') if p.is_file()}


def test_a_failed_export_leaves_the_previous_one_untouched(small_tree, tmp_path):
  config = builder_lib.subset_config(3, 8, 2, 2, 0)  # every image of the 3 classes drawn
  out = tmp_path / 'export'
  artifacts.write_artifacts(str(small_tree), str(out), config, progress=False)
  before = folder_bytes(out)
  assert set(before) == {'train_manifest.csv', 'val_manifest.csv', 'test_manifest.csv',
                         'classes.txt', 'labels.json', 'dataset_stats.json'}
  truncated_jpeg(small_tree, wnids_of(small_tree)[2])  # a train image: the first split read
  with pytest.raises(DataError):
    artifacts.write_artifacts(str(small_tree), str(out), config, progress=False)
  assert folder_bytes(out) == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export', 'tiny-imagenet-200']
  with pytest.raises(DataError):  # nothing there before: nothing there after
    artifacts.write_artifacts(str(small_tree), str(tmp_path / 'new'), config, progress=False)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export', 'tiny-imagenet-200']
  artifacts.write_artifacts(str(small_tree), str(out), config, skip_corrupt=True, progress=False)
  assert artifacts.read_stats(str(out))['num_skipped'] == 1  # replaced whole on success
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export', 'tiny-imagenet-200']


def test_build_stops_at_bad_input_or_skips_and_records_it(small_tree, tmp_path):
  data = tiny_data(tmp_path / 'tfds', small_tree.parent)
  bad_image = truncated_jpeg(small_tree, wnids_of(small_tree)[2])
  # Raised while TFDS writes the split (inside _generate_examples), yet not wrapped.
  where, what = bad_image[0].split(': ', 1)
  assert load_error(data).startswith(f'Tiny ImageNet {where} in {small_tree} {what}')
  bad_line = boxes_line_with_4_fields(small_tree, wnids_of(small_tree)[0])
  where, what = bad_line[0].split(': ', 1)
  assert load_error(data) == f'Tiny ImageNet {where} in {small_tree} {what}; {FIX}.'
  data.skip_corrupt = True
  counts = {s: len(sources.load(data, s)) for s in SPLITS}
  _, splits = documented_subset(small_tree, 3, (10, 1, 1), 0)  # all 12 images of each class
  dropped = {bad_image[0].split(': ')[0], bad_line[1].split(': ')[0]}
  assert counts == {s: len(splits[s] - dropped) for s in SPLITS}
  assert sum(counts.values()) == 3 * 12 - 2
  builder = tfds.builder('tiny_imagenet', config=builder_lib.subset_config(3, 10, 1, 1, 0),
                         data_dir=str(tmp_path / 'tfds'))
  metadata = dict(builder.info.metadata)
  assert (metadata['skip_corrupt'], metadata['num_skipped']) == (True, 3)
  assert matches(metadata['skipped'], bad_line + bad_image)


def test_build_from_a_zip_that_is_not_a_zip_is_one_clear_error(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'tiny-imagenet-200.zip').write_bytes(b'PK but not really' * 100)
  assert load_error(tiny_data(tmp_path / 'tfds', manual)) == (
      f"'{manual}/tiny-imagenet-200.zip' is not a readable zip archive (File is not a zip file);"
      f' download it again from {archive.URL}.')


def test_build_from_a_missing_manual_dir_is_one_clear_error(tmp_path):
  assert load_error(tiny_data(tmp_path / 'tfds', tmp_path / 'nowhere')) == (
      f"config.data.manual_dir='{tmp_path}/nowhere' is not a folder; create it and put the"
      " archives of 'tiny_imagenet/subset3_10_1_1_seed0' in it, or leave it empty to download"
      ' them.')


def test_broken_archives_are_one_clear_error(tmp_path):
  truncated = tmp_path / 'tiny-imagenet-200.tgz'
  truncated.write_bytes(shared_archive('tiny-imagenet-200.tgz').read_bytes()[:1_000_000])
  with pytest.raises(DataError, match=r"^'.*tiny-imagenet-200.tgz' is not a readable \.tar\.gz"
                                      r' archive \(.*\); download it again'):
    archive.open_archive(truncated)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(DataError, match=r'holds no wnids.txt nor tiny-imagenet-200/wnids.txt'):
    archive.open_archive(tmp_path / 'empty')
  (tmp_path / 'notes.rar').write_text('x')
  with pytest.raises(DataError, match=r'is neither a \.zip, a \.tar\.gz/\.tgz nor a folder'):
    archive.open_archive(tmp_path / 'notes.rar')


def test_full_test_split_is_refused_as_unlabelled(tmp_path):
  data = tiny_data(tmp_path, tmp_path)
  data.subset_classes = 0
  with pytest.raises(DataError, match=r"full Tiny ImageNet 'test' split is unlabelled; evaluate"
                                      r" on 'validation'"):
    sources.load(data, 'test')


def test_sources_read_the_built_subset_without_tensorflow(subset5):
  builder, _ = subset5
  data = config_lib.base_config().data
  data.name, data.data_dir, data.download = 'tiny_imagenet', str(builder.data_dir_root), False
  data.subset_classes, data.subset_split, data.subset_seed = 5, (20, 5, 5), 0
  result = run_python(
      'import json, sys\n'
      'from tinyimagenet_jax.data import sources\n'
      'import ml_collections\n'
      'data = ml_collections.ConfigDict(json.loads(sys.argv[1]))\n'
      "data.subset_split = tuple(data.subset_split)\n"
      "train = sources.load(data, 'train')\n"
      'r = train[7]\n'
      "print(json.dumps([len(train), sorted(r), list(r['image'].shape), str(r['image'].dtype),"
      " type(r['label']).__name__, list(train.class_names), 'tensorflow' in sys.modules]))\n",
      data.to_json())
  assert result.returncode == 0, result.stderr[-2000:]
  length, keys, shape, dtype, label_type, names, tensorflow = json.loads(
      result.stdout.splitlines()[-1])
  assert (length, keys, shape, dtype, label_type) == (100, ['image', 'label'], [64, 64, 3],
                                                      'uint8', 'int')
  assert not tensorflow  # reading a prepared dataset never imports TensorFlow
  assert names == builder.info.features['label'].names


def test_class_words_are_the_first_words_txt_names(subset5, tiny_root):
  """The fifth report's per-class tables name classes by words.txt's first name."""
  builder, _ = subset5
  data = config_lib.base_config().data
  data.name, data.data_dir, data.download = 'tiny_imagenet', str(builder.data_dir_root), False
  data.subset_classes, data.subset_split, data.subset_seed = 5, (20, 5, 5), 0
  source = sources.load(data, 'validation')
  first_names = {wnid: words.split(',')[0].strip() for wnid, words in words_of(tiny_root).items()}
  assert tiny_ensembles.class_words(source) == tuple(first_names[w] for w in source.class_names)
  assert {'school bus', 'wooden spoon'} <= {first_names[w] for w in wnids_of(tiny_root)}


def test_importing_sources_leaves_the_builder_unimported():
  result = run_python('import sys\nfrom tinyimagenet_jax.data import sources\n'
                      "print('tinyimagenet_jax.data.tiny_imagenet' in sys.modules,"
                      " 'tensorflow_datasets' in sys.modules)")
  assert result.stdout.split() == ['False', 'False']
