"""The augmentation preview: a PNG grid of one real Tiny ImageNet image."""

import pathlib
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image
import pytest

from tinyimagenet_jax.data import preview, transforms

from helpers import REPO, shared_archive

# The first image in the archive, so reading it stops at the start of the gzip stream.
MEMBER = 'tiny-imagenet-200/test/images/test_1634.JPEG'
PANELS = 4 + 4 + 4 + 4 + 3 + 4 + 4  # the rows of preview.PREVIEW_ROWS
GRID_PIXELS = (4 * 200, 7 * 200)  # 4 columns x 7 rows of 2-inch panels at 100 dpi


@pytest.fixture(scope='module')
def tiny_imagenet_jpeg(tmp_path_factory) -> pathlib.Path:
  """One real 64x64 Tiny ImageNet JPEG, copied out of the shared archive."""
  with tarfile.open(shared_archive('tiny-imagenet-200.tgz')) as tar:
    member = next(member for member in tar if member.name == MEMBER)
    data = tar.extractfile(member).read()
  path = tmp_path_factory.mktemp('preview') / 'image.jpg'
  path.write_bytes(data)
  return path


def test_preview_writes_a_titled_panel_per_op_and_draw(tiny_imagenet_jpeg, tmp_path):
  image = preview.load_image(str(tiny_imagenet_jpeg), 64)
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  path = tmp_path / 'grid.png'
  figure = preview.write_preview(image, str(path), seed=0)
  with Image.open(path) as png:
    assert png.format == 'PNG' and png.size == GRID_PIXELS
  axes = figure.axes
  assert len(axes) == PANELS == sum(map(len, preview.PREVIEW_ROWS))
  assert [axis.get_title() for axis in axes[:4]] == [
      'original', 'contrast 1.3', 'contrast 0.7', 'horizontal flip']
  assert all(axis.get_title() for axis in axes)
  shown = [np.asarray(axis.images[0].get_array()) for axis in axes]
  np.testing.assert_array_equal(shown[0], transforms.to_float(image))
  np.testing.assert_array_equal(shown[3], transforms.to_float(image)[:, ::-1])
  rotations = shown[4:8]
  assert all(not np.array_equal(rotations[0], other) for other in rotations[1:])
  assert shown[-1].shape == (224, 224, 3)


def test_preview_command_writes_the_png(tiny_imagenet_jpeg, tmp_path):
  path = tmp_path / 'grid.png'
  result = subprocess.run(
      [sys.executable, '-m', 'tinyimagenet_jax.data.preview', f'--image={tiny_imagenet_jpeg}',
       f'--out={path}', '--seed=3'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  with Image.open(path) as png:
    assert png.size == GRID_PIXELS
