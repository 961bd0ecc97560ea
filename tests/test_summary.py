"""The layer table against the reports' tables, its text form, and the command."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections

from tinyimagenet_jax import models
from tinyimagenet_jax.models.summary import Layer, format_table, layer_table

from helpers import REPO
from test_models import VGG16_REPORT_TABLE


def table(name: str, shape: tuple[int, ...], num_classes: int = 10, **options) -> list[Layer]:
  """The layer table of the registered model `name`."""
  model = models.build_model(ml_collections.ConfigDict({'name': name, **options}), num_classes)
  return layer_table(model, shape)


def test_conv4_table_is_the_first_reports_table():
  rows = table('conv4', (32, 32, 3))
  assert rows == [
      Layer('Conv_0', (32, 32, 64), 1_792, 0),
      Layer('Conv_1', (16, 16, 128), 73_856, 0),
      Layer('Conv_2', (8, 8, 256), 295_168, 0),
      Layer('Conv_3', (4, 4, 256), 590_080, 0),
      Layer('Dense_0', (256,), 1_048_832, 0),
      Layer('Dense_1', (10,), 2_570, 0),
  ]
  assert format_table(rows).splitlines()[-3:] == [
      'Total params: 2,012,298', 'Trainable params: 2,012,298', 'Non-trainable params: 0']


def test_vgg16_conv_rows_are_the_third_reports_table():
  rows = table('vgg16', (64, 64, 3), 200)
  convs = [(row.path, row.shape, row.params) for row in rows if 'conv' in row.path]
  assert convs == VGG16_REPORT_TABLE
  assert [row.path for row in rows if 'conv' not in row.path] == [
      'fc1', 'Dropout_0', 'fc2', 'Dropout_1', 'predictions']


def test_alexnet_maps_at_224_are_the_papers():
  shapes = {row.path: row.shape for row in table('alexnet', (224, 224, 3), 1000)}
  assert shapes == {
      'conv1': (55, 55, 96), 'conv2': (27, 27, 256), 'conv3': (13, 13, 384),
      'conv4': (13, 13, 384), 'conv5': (13, 13, 256), 'fc6': (4096,), 'Dropout_0': (4096,),
      'fc7': (4096,), 'Dropout_1': (4096,), 'fc8': (1000,)}


def test_batch_norm_statistics_are_non_trainable():
  rows = table('conv3_bn', (32, 32, 3))
  norms = [row for row in rows if row.path.startswith('BatchNorm')]
  assert [(row.params, row.non_trainable) for row in norms] == [(64, 64), (128, 128), (256, 256)]
  assert format_table(rows).splitlines()[-3:] == [
      'Total params: 1,148,362', 'Trainable params: 1,147,914', 'Non-trainable params: 448']


def test_nested_modules_give_one_row_per_leaf_and_the_rows_add_up():
  model = models.build_model(ml_collections.ConfigDict({'name': 'resnet_cnn'}), 10)
  rows = layer_table(model, (32, 32, 3))
  paths = [row.path for row in rows]
  assert paths[:2] == ['stem_conv', 'stem_bn']
  assert 'stage1_block1' not in paths and 'stage1_block1/proj_conv' not in paths
  assert rows[paths.index('stage2_block1/proj_conv')].shape == (16, 16, 128)
  assert paths[-1] == 'head'
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  params = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
  assert sum(row.params for row in rows) == params


def test_format_table_aligns_columns():
  rows = [Layer('conv', (8, 8, 16), 448, 0), Layer('block/bn', (8, 8, 16), 32, 32)]
  assert format_table(rows) == '\n'.join([
      'Layer     Output shape  Param #',
      '-------------------------------',
      'conv      (8, 8, 16)        448',
      'block/bn  (8, 8, 16)         64',
      'Total params: 512',
      'Trainable params: 480',
      'Non-trainable params: 32',
  ])


def run_summary(*args: str) -> subprocess.CompletedProcess:
  """Runs the summary command in a fresh interpreter from the repo root."""
  return subprocess.run(
      [sys.executable, '-m', 'tinyimagenet_jax.models.summary', *args], cwd=REPO,
      capture_output=True, text=True, timeout=300)


def test_command_prints_the_table_of_the_configured_model(tmp_path):
  config = tmp_path / 'bare.py'
  config.write_text('from tinyimagenet_jax.config import base_config\n\n\n'
                    'def get_config():\n  return base_config()\n')
  result = run_summary(f'--config={config}', '--config.model.name=vgg16', '--image_size=64')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == "Model 'vgg16' on 64x64x3 input, 200 classes"
  assert lines[-9].split() == ['block5_conv3', '(4,', '4,', '512)', '2,359,808']
  assert lines[-3:] == ['Total params: 40,708,104', 'Trainable params: 40,708,104',
                        'Non-trainable params: 0']


def test_command_reports_an_option_the_model_lacks_in_one_line():
  result = run_summary('--config=configs/conv4_relu.py', '--config.model.name=vgg16')
  assert result.returncode == 2 and result.stderr.count('\n') == 1
  assert result.stderr.startswith('error: config.model.activation')
  assert "'vgg16'" in result.stderr and 'batch_norm, dropout, hidden, widths' in result.stderr
