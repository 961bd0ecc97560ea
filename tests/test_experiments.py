"""The experiment layer: the ReLU/tanh sweep, grid sweeps, evaluate and predict modes."""

import csv
import json
import re

import launch
import numpy as np
import pytest

from configs import relu_vs_tanh as relu_vs_tanh_config
from tinyimagenet_jax import evaluation, train, writers
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.experiments import common, grid, relu_vs_tanh


def test_relu_vs_tanh_smoke_writes_its_tables_and_figures(tmp_path, capsys):
  config = relu_vs_tanh_config.get_config('smoke')
  assert launch.run(config, str(tmp_path)) == 0
  out = capsys.readouterr().out
  assert 'Experiment relu_vs_tanh done; wrote runs.csv, runs.md' in out
  names = [relu_vs_tanh.run_name(a, lr) for a in ('relu', 'tanh') for lr in config.sweep[a]]
  assert [line for line in out.splitlines() if line.startswith('[run ')] == [
      f'[run {index + 1}/{len(names)}] {name}' for index, name in enumerate(names)]
  for line in (tmp_path / 'summary.md').read_text().splitlines()[2:4]:
    assert re.fullmatch(r'- (relu|tanh): learning rate [\d.]+ (reached the target in \d+|did'
                        r' not reach the target in \d+) epochs, [\d.]+ s per epoch', line), line
  for name in ('runs.csv', 'runs.md', 'summary.json', 'summary.md'):
    assert (tmp_path / name).stat().st_size > 0
  for name in ('training_error.png', 'seconds_per_epoch.png'):
    assert (tmp_path / name).read_bytes()[:4] == b'\x89PNG'
  rows = (tmp_path / 'runs.csv').read_text().splitlines()
  assert [row.split(',')[0] for row in rows[1:]] == names
  summary = json.loads((tmp_path / 'summary.json').read_text())
  target = config.target_train_error
  reached = {name: common.first_epoch_at_or_below(writers.read_history(str(tmp_path / name)),
                                                  'train_error', target) for name in names}
  for activation in ('relu', 'tanh'):
    mine = {n: e for n, e in reached.items() if n.startswith(activation) and e is not None}
    if mine:
      assert summary['chosen'][activation]['epochs_to_target'] == min(mine.values())
  epochs = [summary['chosen'][a]['epochs_to_target'] for a in ('relu', 'tanh')]
  if all(epochs):
    assert summary['epochs_ratio_tanh_over_relu'] == pytest.approx(epochs[1] / epochs[0])


def test_pruning_caps_later_candidates_at_the_best_epoch_count():
  rows = [{'activation': 'relu', 'run': 'a', 'epochs_to_target': 5, 'final_train_error': 0.2},
          {'activation': 'relu', 'run': 'b', 'epochs_to_target': 5, 'final_train_error': 0.1},
          {'activation': 'relu', 'run': 'c', 'epochs_to_target': '', 'final_train_error': 0.05}]
  assert relu_vs_tanh.choose(rows)['run'] == 'b'
  assert relu_vs_tanh.choose([dict(rows[2]), dict(rows[2], run='d', final_train_error=0.3)]
                             )['run'] == 'c'


@pytest.fixture
def small(digits_config):
  digits_config.steps_per_epoch = 5
  digits_config.write_plots = False
  return digits_config


def test_grid_trains_every_combination_and_ranks_by_the_metric(small, tmp_path):
  small.data.validation_size = 200
  small.num_epochs = 1
  small.experiment = 'grid'
  small.grid = ('optimizer.learning_rate=0.01,0.1', 'optimizer.momentum=0.0,0.9')
  small.grid_metric = 'val_top1'
  result = grid.run(small, str(tmp_path))
  assert len(result['rows']) == 4
  scores = {row['run']: writers.read_history(str(tmp_path / row['run']))[0]['val_top1']
            for row in result['rows']}
  assert [row['val_top1'] for row in result['rows']] == sorted(scores.values(), reverse=True)
  assert set(scores) == {f'learning_rate={lr},momentum={m}' for lr in (0.01, 0.1)
                         for m in (0.0, 0.9)}
  assert len((tmp_path / 'grid.csv').read_text().splitlines()) == 5


@pytest.mark.parametrize('entries, message', [
    (('optimizer.learning_rate',), "must be 'key=value1,value2,...'"),
    (('optimizer.learnin_rate=0.1',), "names no config field"),
    (('optimizer.learning_rate=fast',), 'does not fit its field'),
    ((), 'config.grid is empty'),
])
def test_grid_mistakes_are_one_line(small, entries, message):
  small.grid = entries
  with pytest.raises(ConfigError, match=message):
    grid.grid_runs(small)


def test_evaluate_and_predict_modes_read_the_saved_run(small, tmp_path, capsys):
  _, history = train.train_and_evaluate(small, str(tmp_path))
  small.mode = 'evaluate'
  assert launch.run(small, str(tmp_path)) == 0
  assert 'on test (360 images): top-1' in capsys.readouterr().out
  saved = json.loads((tmp_path / 'evaluation_test.json').read_text())
  assert saved['count'] == 360
  np.testing.assert_allclose(saved['top1'], history[-1]['test_top1'], atol=1e-6)
  np.testing.assert_allclose(saved['top5'], history[-1]['test_top5'], atol=1e-6)
  np.testing.assert_allclose(saved['loss'], history[-1]['test_loss'], rtol=1e-4)
  small.mode = 'predict'
  assert launch.run(small, str(tmp_path)) == 0
  lines = (tmp_path / 'predictions_test.txt').read_text().splitlines()
  assert [line.split()[0] for line in lines] == [str(i) for i in range(360)]
  _, scores = evaluation.score_saved(small, str(tmp_path))
  probabilities, labels = scores.probabilities, scores.labels
  assert [int(line.split()[1]) for line in lines] == probabilities.argmax(-1).tolist()
  assert np.mean(probabilities.argmax(-1) == labels) == pytest.approx(saved['top1'])
  with open(tmp_path / 'predictions_test.csv', newline='') as file:
    rows = list(csv.reader(file))
  assert rows[0] == ['id', 'predicted', 'probability', 'top5'] and len(rows) == 361
  for index, (example_id, predicted, probability, top5) in enumerate(rows[1:]):
    ranked = np.argsort(-probabilities[index], kind='stable')[:5]
    assert example_id == str(index) and predicted == str(ranked[0])
    assert float(probability) == pytest.approx(probabilities[index, ranked[0]], abs=1e-6)
    assert top5.split(' ') == [str(label) for label in ranked]


def test_evaluate_without_a_checkpoint_is_one_line(small, tmp_path, capsys):
  small.mode = 'evaluate'
  assert launch.run(small, str(tmp_path)) == 2
  assert capsys.readouterr().err.startswith('error: no checkpoint in ')


def test_unknown_experiment_is_one_line(small, tmp_path, capsys):
  small.experiment = 'relu_vs_sigmoid'
  assert launch.run(small, str(tmp_path)) == 2
  assert "config.experiment='relu_vs_sigmoid' is not a valid choice" in capsys.readouterr().err
