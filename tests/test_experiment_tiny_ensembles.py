"""The tiny_ensembles experiment (fifth report) end to end in its smoke mode: M1-M4, the best
model's classes, filters and predictions, and every subset of the members as an ensemble."""

import json

import launch
import numpy as np
import pytest
from PIL import Image

from configs import tiny_ensembles as tiny_ensembles_config
from tinyimagenet_jax import members as member_lib
from tinyimagenet_jax import writers
from tinyimagenet_jax.analysis import filters
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import tiny_ensembles

from helpers import read_csv

@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke mode (three members, one stacked run): (config, workdir)."""
  config = tiny_ensembles_config.get_config('smoke')
  workdir = tmp_path_factory.mktemp('tiny_ensembles')
  assert launch.run(config, str(workdir)) == 0
  return config, workdir


def read_summary(workdir) -> dict:
  return json.loads((workdir / 'summary.json').read_text())


def final(workdir, run: str) -> dict:
  """The last epoch record of a run, from its metrics.jsonl."""
  return writers.read_history(str(workdir / run))[-1]


def test_models_table_and_the_best_models_reports_match_the_metrics(smoke):
  config, workdir = smoke
  rows = read_csv(workdir / 'models.csv')
  assert [row['model'] for row in rows] == list(config.ensembles.models)
  for row in rows:
    assert float(row['final_top1']) == final(workdir, row['model'])['test_top1']
    assert float(row['final_top5']) == final(workdir, row['model'])['test_top5']
  best = max(config.ensembles.models, key=lambda model: final(workdir, model)['test_top1'])
  summary = read_summary(workdir)
  assert summary['best_model'] == best
  classes = read_csv(workdir / 'classwise_classes.csv')
  assert [row['name'] for row in classes] == [str(digit) for digit in range(10)]
  correct = sum(int(row['correct']) for row in classes)
  assert correct / sum(int(row['support']) for row in classes) == final(workdir, best)['test_top1']
  assert summary['classwise']['accuracy'] == final(workdir, best)['test_top1']
  assert len(summary['classwise']['best']) == len(summary['classwise']['worst']) == 5
  with Image.open(workdir / 'filters.png') as image:  # 5x5 first-layer filters, enlarged
    pixels = np.asarray(image.convert('L'))
  band = 2 * filters.TITLE_PIXELS
  assert (pixels[:band] < 128).any()  # the title's text
  scale = next(s for s in range(8, 200)
               if pixels.shape[1] % s == 0 and (pixels.shape[1] // s + 1) % 6 == 0)
  assert pixels.shape[1] >= tiny_ensembles.FILTERS_MIN_WIDTH
  assert (pixels.shape[0] - band) % scale == 0


def test_predictions_file_has_a_line_per_test_image_in_the_servers_format(smoke):
  config, workdir = smoke
  best = read_summary(workdir)['best_model']
  lines = (workdir / best / f'predictions_{config.ensembles.predict_split}.txt'
           ).read_text().splitlines()
  test = sources.digits('test')
  assert len(lines) == len(test)
  names, predicted = zip(*(line.split(' ') for line in lines))
  assert list(names) == [test.name(index) for index in range(len(test))]
  hits = np.mean([int(label) == test[index]['label'] for index, label in enumerate(predicted)])
  assert hits == final(workdir, best)['test_top1']


def test_every_subset_of_members_is_an_ensemble(smoke):
  config, workdir = smoke
  count = len(config.ensembles.seeds)
  members = read_csv(workdir / 'members.csv')
  histories = [history[-1] for history in member_lib.member_histories(
      writers.read_history(str(workdir / tiny_ensembles.MEMBERS)), count)]
  assert [float(row['final_top1']) for row in members] == [h['test_top1'] for h in histories]
  assert [float(row['accuracy']) for row in members] == [h['test_top1'] for h in histories]
  subsets = read_csv(workdir / 'ensemble_subsets.csv')
  assert [int(row['size']) for row in subsets] == [1] * count + [2] * 3 + [3]
  assert [float(row['accuracy']) for row in subsets[:count]] == [h['test_top1'] for h in histories]
  sizes = read_csv(workdir / 'ensemble_sizes.csv')
  for row in sizes:
    mine = [float(s['accuracy']) for s in subsets if s['size'] == row['size']]
    assert float(row['mean']) == pytest.approx(np.mean(mine))
    assert (float(row['min']), float(row['max'])) == (min(mine), max(mine))
  summary = read_summary(workdir)
  assert summary['ensemble']['accuracy'] == float(subsets[-1]['accuracy'])
  assert (workdir / 'ensemble_size.png').read_bytes()[:4] == b'\x89PNG'


class FakeRecords(list):
  """Records as a Tiny ImageNet data source yields them (reads counted)."""

  reads = 0

  def __getitem__(self, index):
    FakeRecords.reads += 1
    return super().__getitem__(index)


def test_class_words_are_the_first_words_txt_name_and_reading_stops_when_all_are_named():
  records = FakeRecords([{'label': 1, 'class_name': b'school bus'},
                         {'label': 0, 'class_name': b'spoon, wooden spoon'},
                         {'label': 1, 'class_name': b'school bus'}])
  source = sources.TfdsSource(records, ('n04146614', 'n04597913'))
  FakeRecords.reads = 0
  assert tiny_ensembles.class_words(source) == ('spoon', 'school bus')
  assert FakeRecords.reads == 3  # the first record twice (the feature check), then the second
  assert tiny_ensembles.class_words(sources.digits('test'))[:2] == ('0', '1')


def test_members_must_pair_a_seed_with_a_learning_rate():
  config = tiny_ensembles_config.get_config('smoke')
  config.ensembles.learning_rates = (0.01,)
  with pytest.raises(ConfigError, match='must pair up one seed and one learning rate'):
    tiny_ensembles.run(config, '/nonexistent')
