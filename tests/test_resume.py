"""Nothing lost: kills, preemption, device-count changes, NaNs and config changes."""

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tinyimagenet_jax import checkpoint, resumption, train, writers
from tinyimagenet_jax.errors import ConfigError, DataError, NonFiniteLossError

from digits_config import make_digits_config
from helpers import REPO, run_python

TIMING = ('seconds', 'images_per_second')


def without_timing(history: list[dict]) -> list[dict]:
  return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def final_params(workdir) -> dict:
  """The parameters of a run's newest checkpoint, as numpy arrays."""
  return checkpoint.load_saved_variables(str(workdir))['params']


def assert_same_run(workdir, reference) -> None:
  """Bitwise-equal final parameters, metric history and per-step log."""
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir), final_params(reference))
  assert without_timing(writers.read_history(str(workdir))) == without_timing(
      writers.read_history(str(reference)))
  assert writers.read_steps(str(workdir)) == writers.read_steps(str(reference))


# The suite's small digits conv4 (tests/digits_config.py) for 4 epochs of 22 steps, on the host
# path, a checkpoint every 7 steps (mid-epoch saves), no plots (nothing here compares them). The
# kills need only the run's plumbing, so its steps are the suite's cheapest: each launch is
# mostly start-up, and 88 steps leave room for three kills after two fresh saves each.
LAUNCH_ARGS = ('--config=tests/digits_config.py', '--config.num_epochs=4',
               '--config.write_plots=False', '--config.checkpoint_every_steps=7',
               '--config.data.placement=host')
# The device path, two steps a call (a lax.scan), a checkpoint every 4 steps, for 2 epochs.
DEVICE_ARGS = ('--config.data.placement=device', '--config.steps_per_call=2',
               '--config.checkpoint_every_steps=4', '--config.num_epochs=2')


def launch(workdir, *extra: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, 'launch.py', *LAUNCH_ARGS, f'--workdir={workdir}',
                           *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def uninterrupted(workdir, *extra: str):
  """`workdir` after the small digits config ran in it (LAUNCH_ARGS, then `extra`), never
  interrupted."""
  process = launch(workdir, *extra)
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return workdir


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The small digits config for 4 epochs on the host path, never interrupted."""
  return uninterrupted(tmp_path_factory.mktemp('reference'))


@pytest.fixture(scope='module')
def device_reference(tmp_path_factory):
  """The same on the device path (DEVICE_ARGS), never interrupted."""
  return uninterrupted(tmp_path_factory.mktemp('device_reference'), *DEVICE_ARGS)


def saved_steps(workdir) -> set[int]:
  """The step folders in a run's checkpoints folder (complete ones only)."""
  folder = workdir / 'checkpoints'
  return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def kill_at_a_random_point(process: subprocess.Popen, workdir, rng: random.Random) -> bool:
  """Waits until the run saves two checkpoints it did not have, then a random fraction of
  the time between those two, then kill -9; returns False if the run finished first.

  The delay is a fraction of the run's own checkpoint interval, not a number of seconds,
  so the kill lands anywhere in the cycle of steps, saves and evaluations that follows,
  on a machine that runs that cycle in a tenth of a second as on one that needs seconds.
  A killed run has kept at least two new checkpoints and at most a third.
  """
  before, seen, times = saved_steps(workdir), set(), []
  while len(times) < 2:
    if process.poll() is not None:
      return False
    new = saved_steps(workdir) - before - seen
    if new:
      seen |= new
      times.extend([time.monotonic()] * min(len(new), 2 - len(times)))
    time.sleep(0.02)
  time.sleep(rng.uniform(0, times[1] - times[0]))
  if process.poll() is not None:
    return False
  process.send_signal(signal.SIGKILL)
  process.wait()
  return True


def interrupt_three_times(workdir, rng: random.Random, *extra: str,
                          finish: tuple[str, ...] | None = None) -> int:
  """Kills the run three times at random points after fresh checkpoints, then lets it
  finish (with `finish` in place of `extra`, if given); returns how many kills landed
  before it was done."""
  kills = 0
  while kills < 3:
    process = launch(workdir, *extra)
    if not kill_at_a_random_point(process, workdir, rng):
      break
    kills += 1
  else:
    process = launch(workdir, *(extra if finish is None else finish))
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return kills


def test_kill_9_at_random_points_then_rerun_matches_the_uninterrupted_run(reference, tmp_path):
  assert interrupt_three_times(tmp_path, random.Random(0)) == 3
  assert_same_run(tmp_path, reference)


def test_kill_9_on_the_device_path_with_several_steps_a_call(device_reference, tmp_path):
  assert interrupt_three_times(tmp_path, random.Random(2), *DEVICE_ARGS) == 3
  assert_same_run(tmp_path, device_reference)


def test_kills_during_saves_leave_a_restorable_checkpoint(reference, tmp_path):
  """Saving every step keeps a save in flight most of the time; kill -9 lands in them.
  The run that finishes after the third kill saves as the reference did (every 7 steps):
  on 2 CPU cores a save every step made that last run the test's slowest part."""
  assert interrupt_three_times(tmp_path, random.Random(1), '--config.checkpoint_every_steps=1',
                               finish=()) == 3
  assert_same_run(tmp_path, reference)


def test_an_unfinished_save_is_ignored(tmp_path, digits_config):
  digits_config.num_epochs = 1
  train.train_and_evaluate(digits_config, str(tmp_path))
  broken = tmp_path / 'checkpoints' / '30.orbax-checkpoint-tmp-123'
  (broken / 'state').mkdir(parents=True)
  (broken / 'state' / 'garbage').write_bytes(b'\x00' * 100)
  digits_config.num_epochs = 2
  state, history = train.train_and_evaluate(digits_config, str(tmp_path))
  assert len(history) == 2 and int(state.step) == 44


def test_sigterm_saves_then_stops_and_a_rerun_matches(reference, tmp_path):
  """SIGTERM a tenth of an epoch's training time after the first epoch's checkpoint (the
  run's own pace, so on a fast machine as on a slow one it lands in a later epoch)."""
  process = launch(tmp_path, '--config.checkpoint_every_steps=0')
  while not saved_steps(tmp_path):  # the first epoch's checkpoint: training is under way
    assert process.poll() is None, process.stderr.read()[-3000:]
    time.sleep(0.02)
  time.sleep(0.1 * writers.read_history(str(tmp_path))[0]['seconds'])
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith(f'stopped by signal {signal.SIGTERM} after saving a checkpoint at step')
  step = int(last.split('at step ')[1].split(';')[0])
  assert step % 22 and step in saved_steps(tmp_path)  # a save in mid-epoch
  process = launch(tmp_path)
  assert process.wait(timeout=600) == 0
  assert_same_run(tmp_path, reference)


def test_same_config_and_seed_give_identical_metrics(digits_run, digits_config, tmp_path):
  first = digits_run[0]  # the session's run of digits_config
  train.train_and_evaluate(digits_config, str(tmp_path))
  assert without_timing(writers.read_history(str(first))) == without_timing(
      writers.read_history(str(tmp_path)))
  assert writers.read_steps(str(first)) == writers.read_steps(str(tmp_path))


TRAIN_ON_DEVICES = '''
import json, sys
import jax
jax.config.update('jax_num_cpu_devices', int(sys.argv[3]))
from absl import flags
flags.FLAGS.mark_as_parsed()
from tinyimagenet_jax import config as config_lib, train
config = config_lib.base_config()
config.update_from_flattened_dict(json.loads(sys.argv[1]))
train.train_and_evaluate(config, sys.argv[2])
'''


def flat(config) -> dict:
  """A ConfigDict as {'section.field': value} for update_from_flattened_dict."""
  out = {}
  for key, value in config.to_dict().items():
    if isinstance(value, dict):
      out.update({f'{key}.{field}': v for field, v in value.items()})
    else:
      out[key] = value
  return out


@pytest.mark.parametrize('first, second', [(8, 1), (1, 8)])
def test_checkpoint_moves_between_device_counts(digits_run, digits_config, tmp_path, first,
                                                 second):
  reference_dir = digits_run[0]  # digits_config for 2 epochs on this process's 1 device
  for devices, epochs in ((first, 1), (second, 2)):
    digits_config.num_epochs = epochs
    result = run_python(TRAIN_ON_DEVICES, json.dumps(flat(digits_config)),
                        str(tmp_path / 'moved'), str(devices))
    assert result.returncode == 0, result.stderr[-3000:]
  moved = writers.read_history(str(tmp_path / 'moved'))
  reference = writers.read_history(str(reference_dir))
  for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1'):
    np.testing.assert_allclose([r[key] for r in moved], [r[key] for r in reference],
                               rtol=1e-4, atol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               final_params(tmp_path / 'moved'), final_params(reference_dir))


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(digits_config, tmp_path):
  """A step schedule that multiplies the rate by 1e7 after the first epoch: the second
  epoch diverges, after the first epoch's checkpoint (a rerun raising num_epochs)."""
  digits_config.optimizer.update(schedule='step', decay_rate=1e7, decay_every_epochs=1.0)
  digits_config.num_epochs = 1
  good_state, _ = train.train_and_evaluate(digits_config, str(tmp_path))
  digits_config.num_epochs = 2
  with pytest.raises(NonFiniteLossError) as error:
    train.train_and_evaluate(digits_config, str(tmp_path))
  message = str(error.value)
  assert int(re.match(r'training stopped at step (\d+)', message).group(1)) > 22
  assert 'lower --config.optimizer.learning_rate (now 500000.0)' in message  # 0.05 * 1e7
  assert 'the last good checkpoint (step 22) is kept' in message and '\n' not in message
  restored = checkpoint.load_saved_variables(str(tmp_path))['params']
  jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(good_state.params))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored))


@pytest.mark.parametrize('key, value', [
    ('optimizer.learning_rate', 0.1), ('optimizer.schedule', 'cosine'),
    ('augment.flip_prob', 0.5), ('optimizer.weight_decay', 1e-4),
    ('model.filters', (8, 16, 16, 32)), ('compute_dtype', 'bfloat16')])
def test_a_result_changing_field_is_refused_and_config_json_kept(digits_run, digits_config,
                                                                  tmp_path, key, value):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)  # a finished 2-epoch run
  before = (tmp_path / 'config.json').read_bytes()
  was = resumption.flatten(digits_config.to_dict())[key]
  digits_config.update_from_flattened_dict({key: value})
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(digits_config, str(tmp_path))
  shown = json.loads(json.dumps(value))
  assert str(error.value) == (
      f'the checkpoints in {tmp_path} were trained with another config ({key}'
      f' {was!r} -> {shown!r}), so resuming would mix two runs; use'
      ' another --workdir for the new config, or add --config.restart=True to start this one'
      ' over.')
  assert (tmp_path / 'config.json').read_bytes() == before


def test_every_differing_key_is_named_at_once(digits_run, digits_config, tmp_path):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)
  digits_config.seed, digits_config.batch_size = 3, 32
  with pytest.raises(ConfigError, match=r'\(batch_size 64 -> 32, seed 0 -> 3\)'):
    train.train_and_evaluate(digits_config, str(tmp_path))


def test_allowed_changes_are_accepted_and_the_run_continues(digits_run, digits_config, tmp_path):
  """Every field of the allow-list changes at once; the run continues from its checkpoint
  to the raised epoch count, as one run never interrupted would."""
  shutil.copytree(digits_run[0], tmp_path / 'resumed')
  digits_config.num_epochs = 3
  whole_state, whole = train.train_and_evaluate(digits_config, str(tmp_path / 'whole'))
  changed = {'data.root': '/elsewhere', 'data.data_dir': '/tfds', 'data.manual_dir': '/manual',
             'data.download': False, 'data.cache_dir': str(tmp_path / 'cache'),
             'data.decoded_cache': True, 'data.num_workers': 0, 'data.num_threads': 1,
             'data.prefetch_batches': 2, 'data.device_memory_fraction': 0.5,
             'progress_bar': False, 'progress_seconds': 5.0, 'write_plots': False,
             'checkpoint_every_steps': 5, 'checkpoint_min_seconds': 0,
             'max_checkpoints_to_keep': 3, 'keep_best_checkpoints': 1, 'best_metric': 'test_loss',
             'best_mode': 'min', 'eval_batch_size': 72, 'mode': 'train', 'restart': False}
  assert set(changed) | {'compilation_cache_dir'} == resumption.ALLOWED_CHANGES
  digits_config.update_from_flattened_dict(changed)
  state, history = train.train_and_evaluate(digits_config, str(tmp_path / 'resumed'))
  assert without_timing(history) == without_timing(whole)
  jax.tree.map(np.testing.assert_array_equal, state.params, whole_state.params)
  saved = json.loads((tmp_path / 'resumed' / 'config.json').read_text())
  assert saved['num_epochs'] == 3 and saved['eval_batch_size'] == 72


def test_num_epochs_may_not_change_under_a_schedule_shaped_by_it():
  saved = {'num_epochs': 2, 'optimizer': {'schedule': 'onecycle'}}
  raised = {'num_epochs': 3, 'optimizer': {'schedule': 'onecycle'}}
  assert resumption.differing_keys(saved, raised, {}) == ['num_epochs']
  for schedule in ('constant', 'step'):
    saved['optimizer']['schedule'] = raised['optimizer']['schedule'] = schedule
    assert resumption.differing_keys(saved, raised, {}) == []
    assert resumption.differing_keys(raised, saved, {}) == ['num_epochs']  # lowered


def test_restart_starts_over_after_a_refusal(digits_config, tmp_path):
  digits_config.num_epochs = 1
  train.train_and_evaluate(digits_config, str(tmp_path))
  digits_config.batch_size = 32
  with pytest.raises(ConfigError):
    train.train_and_evaluate(digits_config, str(tmp_path))
  digits_config.restart = True
  state, history = train.train_and_evaluate(digits_config, str(tmp_path))
  assert len(history) == 1 and int(state.step) == 1437 // 32


@pytest.fixture(scope='module')
def three_epochs(tmp_path_factory):
  """make_digits_config() run for 3 epochs, never interrupted: (final state, history)."""
  config = make_digits_config()
  config.num_epochs = 3
  return train.train_and_evaluate(config, str(tmp_path_factory.mktemp('three_epochs')))


def truncate_largest_array_file(step_folder) -> None:
  """Cuts the largest file of the step's saved arrays to half its length."""
  largest = max((path for path in (step_folder / 'state').rglob('*') if path.is_file()
                 and path.parent.name == 'd'), key=lambda path: path.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:largest.stat().st_size // 2])


def add_partial_newer_step(step_folder) -> None:
  """A plain step folder newer than `step_folder` holding only its state item."""
  newer = step_folder.with_name(str(int(step_folder.name) + 22))
  shutil.copytree(step_folder / 'state', newer / 'state')


DAMAGE = {
    'truncated array': truncate_largest_array_file,
    'missing progress metadata': lambda folder: (folder / 'progress' / 'metadata').unlink(),
    'partial newer step': add_partial_newer_step,
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    digits_run, digits_config, three_epochs, tmp_path, capsys, damage):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)  # checkpoints at steps 22, 44
  DAMAGE[damage](tmp_path / 'checkpoints' / '44')
  digits_config.num_epochs = 3
  state, history = train.train_and_evaluate(digits_config, str(tmp_path))
  damaged_step, intact_step = (66, 44) if damage == 'partial newer step' else (44, 22)
  captured = capsys.readouterr()
  warnings = [line for line in captured.err.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and f'checkpoint {damaged_step} is damaged (' in warnings[0]
  assert f'Resuming {tmp_path} from step {intact_step} ' in captured.out
  assert (tmp_path / 'checkpoints' / f'damaged-{damaged_step}').is_dir()
  whole_state, whole = three_epochs
  assert without_timing(history) == without_timing(whole)
  jax.tree.map(np.testing.assert_array_equal, state.params, whole_state.params)


def test_no_intact_checkpoint_is_one_error(digits_run, digits_config, tmp_path):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)
  for step in (22, 44):
    (tmp_path / 'checkpoints' / str(step) / 'progress' / 'metadata').unlink()
  digits_config.num_epochs = 3
  with pytest.raises(DataError) as error:
    train.train_and_evaluate(digits_config, str(tmp_path))
  message = str(error.value)
  assert '\n' not in message and message.startswith(f'no intact checkpoint in {tmp_path}')
  assert 'checkpoint 44 is damaged (' in message and 'checkpoint 22 is damaged (' in message
  assert message.endswith('use another --workdir or add --config.restart=True to start over.')


def test_init_from_loads_matching_weights(digits_run, digits_config, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # relative workdirs, as `runs/<name>` on the command line
  shutil.copytree(digits_run[0], 'source')  # digits_config trained for 2 epochs
  source = digits_run[2]
  digits_config.num_epochs = 1
  digits_config.optimizer.learning_rate = 1e-12
  digits_config.optimizer.momentum = 0.0
  digits_config.init_from = 'source'
  _, history = train.train_and_evaluate(digits_config, 'target')
  assert history[0]['test_top1'] == pytest.approx(source[-1]['test_top1'])
  assert history[0]['test_loss'] == pytest.approx(source[-1]['test_loss'], rel=1e-4)


def test_merge_matching_keeps_a_new_head():
  target = {'conv': {'kernel': np.zeros((3, 3, 1, 4))}, 'head': {'kernel': np.zeros((4, 5))}}
  source = {'conv': {'kernel': np.ones((3, 3, 1, 4))}, 'head': {'kernel': np.ones((4, 100))}}
  merged, taken, total = checkpoint.merge_matching(target, source)
  assert (taken, total) == (1, 2)
  assert float(merged['conv']['kernel'].sum()) == 36 and float(merged['head']['kernel'].sum()) == 0


def test_best_checkpoints_are_kept_besides_the_latest(digits_config, tmp_path):
  digits_config.num_epochs = 4
  digits_config.max_checkpoints_to_keep = 1
  digits_config.keep_best_checkpoints = 1
  digits_config.best_metric = 'test_loss'
  digits_config.best_mode = 'max'  # the worst epoch: an early one, so not the latest
  _, history = train.train_and_evaluate(digits_config, str(tmp_path))
  best = max(history, key=lambda r: r['test_loss'])['step']
  kept = checkpoint.Checkpoints(str(tmp_path / 'checkpoints'), 1).all_steps()
  assert best != history[-1]['step']
  assert kept == [best, history[-1]['step']]


def test_epoch_ends_are_saved_min_seconds_apart_and_a_run_resumes_from_an_older_one(tmp_path):
  """checkpoint_min_seconds: with an hour, a 3-epoch run saves its first and last epoch ends;
  with 0, or with keep_best_checkpoints, every one. A rerun whose newest checkpoint was lost
  resumes from the first epoch's and ends as the run that saved every epoch end."""
  settings = {'hour': {'checkpoint_min_seconds': 3600},
              'every': {'checkpoint_min_seconds': 0},
              'best': {'checkpoint_min_seconds': 3600, 'keep_best_checkpoints': 1}}
  configs, epoch_ends = {}, {}
  for name, overrides in settings.items():
    configs[name] = make_digits_config()
    configs[name].update({'num_epochs': 3, 'max_checkpoints_to_keep': 5, 'write_plots': False,
                          **overrides})
    _, history = train.train_and_evaluate(configs[name], str(tmp_path / name))
    epoch_ends[name] = [record['step'] for record in history]
  first, _, last = epoch_ends['hour']
  assert saved_steps(tmp_path / 'hour') == {first, last}
  assert saved_steps(tmp_path / 'every') == saved_steps(tmp_path / 'best') == set(
      epoch_ends['every'])
  shutil.rmtree(tmp_path / 'hour' / 'checkpoints' / str(last))
  train.train_and_evaluate(configs['hour'], str(tmp_path / 'hour'))
  assert saved_steps(tmp_path / 'hour') == {first, last}
  assert_same_run(tmp_path / 'hour', tmp_path / 'every')
