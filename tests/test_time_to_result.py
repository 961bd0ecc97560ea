"""The time_to_result benchmark's pieces, one tiny case end to end, and the compilation
cache every build turns on (never over a folder the user chose)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tinyimagenet_jax import tuning
from tinyimagenet_jax.bench import common, time_to_result

from helpers import REPO


def test_ratio_and_goals():
  assert time_to_result.ratio(13.0, 10.0) == 1.3
  assert time_to_result.ratio(5.0, 0.0) is None
  assert time_to_result.goal('quickstart', 'cold', 20.0, 1.3) == 'ratio <= 1.3: met'
  assert time_to_result.goal('quickstart', 'warm', 20.0, 1.2) == 'ratio <= 1.15: not met'
  assert time_to_result.goal('relu_vs_tanh:smoke', 'cold', 19.0, 3.0) == 'wall <= 20 s: met'
  assert time_to_result.goal('relu_vs_tanh:smoke', 'warm', 21.0, 3.0) == 'wall <= 20 s: not met'
  assert time_to_result.goal('cifar10_conv4', 'cold', 100.0, 2.0) == ''
  assert time_to_result.goal('quickstart', 'warm', 20.0, 1.1, 1.05) == 'ratio <= 1.15: met'
  assert time_to_result.goal('quickstart', 'warm', 20.0, 2.4, 1.4) == (
      'ratio <= 1.15: not met (start-up alone puts the floor at 1.4)')


def test_start_up_is_a_fresh_interpreter_importing_what_launch_imports(monkeypatch):
  listing = time_to_result.STARTUP_IMPORTS + '; import sys; print(sorted(sys.modules))'
  imported = subprocess.run([sys.executable, '-c', listing], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
  assert all(f"'{name}'" in imported for name in ('launch', 'jax', 'tinyimagenet_jax.train',
                                                  'tinyimagenet_jax.evaluation'))
  commands = []
  monkeypatch.setattr(time_to_result.subprocess, 'run',
                      lambda command, **options: commands.append((command, options['cwd'])))
  assert time_to_result.startup_seconds(repeats=3) >= 0
  assert commands == [([sys.executable, '-c', time_to_result.STARTUP_IMPORTS], REPO)] * 3


def test_flags_read_back_as_the_config_values():
  assert time_to_result.flag_value((100, 20, 20)) == '(100,20,20)'
  assert time_to_result.flag_value(('a',)) == '(a,)'
  assert time_to_result.flag_value(False) == 'False'
  assert time_to_result.as_tuples({'a': [1, [2, 3]], 'b': {'c': []}}) == {
      'a': (1, (2, 3)), 'b': {'c': ()}}
  case = time_to_result.cases(pathlib.Path('/scratch'), 200)['cifar10_conv4']
  flags = time_to_result.launch_flags(case, 'device', pathlib.Path('/w'))
  assert flags[:2] == ['--config=configs/conv4_relu.py', '--workdir=/w']
  assert '--config.steps_per_epoch=200' in flags and flags[-1] == '--config.data.placement=device'
  assert time_to_result.case_config(case).data.root == '/scratch/cifar-10-images-jpg'


def test_one_tiny_case_is_timed_cold_and_warm(tmp_path):
  case = time_to_result.Case('tiny', 'configs/quickstart.py', {
      'num_epochs': 1, 'steps_per_epoch': 3, 'progress_bar': False, 'write_plots': False})
  rows = time_to_result.measure(case, tmp_path, common.Args(batches=2, warmup=1, repeats=1),
                                startup_s=1.5, placements=('host',))
  assert [(row['placement'], row['cache']) for row in rows] == [('host', 'cold'), ('host', 'warm')]
  for row in rows:
    assert 'error' not in row and row['steps'] == 3 and row['math_s'] > 0
    assert row['ratio'] == pytest.approx(row['wall_s'] / row['math_s'], rel=0.02)
    assert row['eval_math_s'] > 0  # the one epoch's test evaluation
    assert 0 < row['epochs_s'] < row['wall_s']
    assert row['ratio_with_eval'] == pytest.approx(
        row['wall_s'] / (row['math_s'] + row['eval_math_s']), rel=0.02)
    assert row['startup_s'] == 1.5
    assert row['ratio_floor'] == pytest.approx(1 + 1.5 / row['math_s'], rel=0.02)
  assert list((tmp_path / 'jax_cache' / 'tiny' / 'host' / '0').iterdir())  # the cold run filled it


def test_a_failed_run_misses_its_goal_and_says_why(tmp_path):
  case = time_to_result.Case('relu_vs_tanh:smoke', 'configs/quickstart.py',
                             {'model.name': 'no_such_model'})
  rows = time_to_result.measure(case, tmp_path, common.Args(batches=2, warmup=1, repeats=1),
                                startup_s=1.0, placements=('host',))
  for row in rows:
    assert row['goal'] == 'not met: the run failed'
    assert row['error'].startswith('exit 2: ') and 'no_such_model' in row['error']


BUILD = '''
import json, sys, jax
from tinyimagenet_jax import build
config = build.load_config('quickstart')
config.model.filters, config.model.hidden = (4, 4, 4, 4), 8
purpose, config.compilation_cache_dir = sys.argv[1:]
build.build(config, purpose)
print(json.dumps([jax.config.jax_compilation_cache_dir,
                  jax.config.jax_persistent_cache_min_compile_time_secs]))
'''


def build_in_fresh_process(home: pathlib.Path, purpose: str, folder: str = '', **env: str
                           ) -> list:
  """[cache folder, min compile seconds] after build(config, purpose) in a new interpreter
  whose home is `home`, with config.compilation_cache_dir=`folder` and no compilation
  cache settings in its environment but `env`'s."""
  clean = {key: value for key, value in os.environ.items()
           if not key.startswith('JAX_COMPILATION_CACHE') and 'PERSISTENT_CACHE' not in key}
  result = subprocess.run([sys.executable, '-c', BUILD, purpose, folder], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**clean, 'HOME': str(home), **env})
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('chosen', ['none', 'environment', 'config'])
def test_build_turns_on_the_compilation_cache_where_the_user_chose_none(tmp_path, chosen):
  default = tmp_path / 'home' / '.cache' / 'tinyimagenet_jax' / 'jax'
  own = tmp_path / 'own'
  if chosen == 'none':
    folder, seconds = build_in_fresh_process(tmp_path / 'home', 'train')
    assert (folder, seconds) == (str(default), tuning.CACHE_MIN_COMPILE_SECONDS)
    assert list(default.iterdir())  # the state's initialisation was cached
  elif chosen == 'environment':
    folder, seconds = build_in_fresh_process(  # shapes only: nothing compiles
        tmp_path / 'home', 'evaluate', JAX_COMPILATION_CACHE_DIR=str(own),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='2')
    assert (folder, seconds) == (str(own), 2.0)
  else:
    folder, _ = build_in_fresh_process(tmp_path / 'home', 'evaluate', str(own))
    assert folder == str(own)
  assert default.exists() == (chosen == 'none')
