"""Two JAX processes on 127.0.0.1 (jax.distributed, CPU collectives) train as one.

Each process runs the real `train_and_evaluate` with two simulated CPU devices,
reads only its own rows of every batch (host path) or holds the split on its own
devices (device path), and saves its part of each Orbax checkpoint; the run,
stopped after one epoch and resumed for the second, matches a single-process run
on one device step for step. The digits config
trains a small MLP here: the same machinery as conv4 for a third of the compile
time, which four processes pay.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from tinyimagenet_jax import checkpoint, evaluation, parallel, train, writers

from helpers import REPO

PROCESSES = 2

ONE_OF_TWO = '''
import json, sys
import jax

if __name__ == '__main__':
  jax.config.update('jax_num_cpu_devices', 2)
  jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                             process_id=int(sys.argv[2]), heartbeat_timeout_seconds=600)
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  from tinyimagenet_jax import config as config_lib, evaluation, train
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
  config = config_lib.base_config()
  config.update_from_flattened_dict(json.loads(sys.argv[3]))
  WORK
  jax.distributed.shutdown()
'''
# One process of two with two simulated CPU devices each: argv is the coordinator's
# address, the process id, the flattened config and the workdir.
TRAIN_AS_ONE_OF_TWO = ONE_OF_TWO.replace('WORK', 'train.train_and_evaluate(config, sys.argv[4])')


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def flattened(config) -> dict:
  """The config as {'section.key': value}, for `update_from_flattened_dict`."""

  def items(tree: dict, prefix: str):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from items(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value

  return dict(items(config.to_dict(), ''))


def train_on_two_processes(config, workdir: str) -> None:
  """Runs `train_and_evaluate(config, workdir)` as two JAX processes; fails with their output."""
  address = f'127.0.0.1:{free_port()}'
  workers = [subprocess.Popen(
      [sys.executable, '-c', TRAIN_AS_ONE_OF_TWO, address, str(index),
       json.dumps(flattened(config)), workdir],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}) for index in range(PROCESSES)]
  finish_output(workers)


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_two_processes_train_like_one(digits_config, tmp_path, placement):
  """Host path: each process reads its own rows of every batch. Device path: each process
  holds the split on its devices, three steps a call, flips and crops drawn per example."""
  digits_config.model = ml_collections.ConfigDict({'name': 'mlp', 'hidden': (32,)})
  digits_config.steps_per_epoch = 3
  digits_config.data.placement = placement
  if placement == 'device':
    digits_config.steps_per_call = 3
    digits_config.augment.flip_prob = 0.5
    digits_config.augment.pad_crop = 1
  digits_config.write_plots = False
  two = str(tmp_path / 'two')
  digits_config.num_epochs = 1
  train_on_two_processes(digits_config, two)
  digits_config.num_epochs = 2
  train_on_two_processes(digits_config, two)  # resumes: each process's own data position

  state, history = train.train_and_evaluate(digits_config, str(tmp_path / 'one'))
  two_steps, one_steps = writers.read_steps(two), writers.read_steps(str(tmp_path / 'one'))
  assert [s['step'] for s in two_steps] == [s['step'] for s in one_steps] == list(range(1, 7))
  np.testing.assert_allclose([s['loss'] for s in two_steps], [s['loss'] for s in one_steps],
                             rtol=1e-5)
  two_history = writers.read_history(two)
  for key in ('train_loss', 'test_loss', 'test_top1'):
    np.testing.assert_allclose([r[key] for r in two_history], [r[key] for r in history],
                               rtol=1e-5, err_msg=key)
  assert two_history[-1]['step'] == 6

  saved = checkpoint.Checkpoints(checkpoint.directory(two), keep=2)
  try:
    assert saved.all_steps() == [3, 6]
    # Only a host-path checkpoint holds the data iterator's position.
    assert (pathlib.Path(saved.directory) / '6' / 'data').exists() == (placement == 'host')
    restored = saved.restore_state(parallel.put_replicated(state, parallel.make_mesh()))
  finally:
    saved.close()
  assert int(restored.step) == 6
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6),
               jax.device_get((restored.params, restored.opt_state)),
               jax.device_get((state.params, state.opt_state)))


@pytest.mark.parametrize('first, second, placement', [(2, 1, 'host'), (1, 2, 'device')])
def test_a_run_resumes_under_another_process_count(digits_config, tmp_path, first, second,
                                                   placement):
  """One epoch on `first` processes, the second on `second`: the steps and metrics of a run
  on one process throughout."""
  digits_config.model = ml_collections.ConfigDict({'name': 'mlp', 'hidden': (32,)})
  digits_config.steps_per_epoch = 3
  digits_config.data.placement = placement
  digits_config.write_plots = False
  moved = str(tmp_path / 'moved')
  for processes, epochs in ((first, 1), (second, 2)):
    digits_config.num_epochs = epochs
    if processes == 2:
      train_on_two_processes(digits_config, moved)
    else:
      train.train_and_evaluate(digits_config, moved)
  _, history = train.train_and_evaluate(digits_config, str(tmp_path / 'one'))
  moved_steps, one_steps = writers.read_steps(moved), writers.read_steps(str(tmp_path / 'one'))
  assert [s['step'] for s in moved_steps] == [s['step'] for s in one_steps] == list(range(1, 7))
  np.testing.assert_allclose([s['loss'] for s in moved_steps], [s['loss'] for s in one_steps],
                             rtol=1e-5)
  for key in ('train_loss', 'test_loss', 'test_top1'):
    np.testing.assert_allclose([r[key] for r in writers.read_history(moved)],
                               [r[key] for r in history], rtol=1e-5, err_msg=key)


# The quickstart's digits, an MLP, on the default placement (the device path).
TWO_PROCESS_ARGS = ('--config=configs/quickstart.py', '--config.model.name=mlp',
                    '--config.num_epochs=5', '--config.progress_bar=False',
                    '--config.write_plots=False')


def launch_two(workdir) -> list[subprocess.Popen]:
  """Two processes of `python launch.py` forming one run, as a user starts them by hand."""
  address = f'127.0.0.1:{free_port()}'
  return [subprocess.Popen(
      [sys.executable, 'launch.py', *TWO_PROCESS_ARGS, f'--workdir={workdir}',
       f'--coordinator_address={address}', '--num_processes=2', f'--process_id={index}'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}) for index in range(PROCESSES)]


def finish(workers: list[subprocess.Popen], timeout: float = 180) -> list[str]:
  """Each worker's stderr once it exits; kills both and fails if either outlives `timeout`."""
  try:
    return [worker.communicate(timeout=timeout)[1] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  whole, cut = tmp_path / 'whole', tmp_path / 'cut'
  errors = finish(launch_two(whole))
  assert all(error.count('Traceback') == 0 for error in errors), errors[0][-3000:]
  workers = launch_two(cut)
  checkpoints = cut / 'checkpoints'
  while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
    assert all(worker.poll() is None for worker in workers), finish(workers)[0][-3000:]
    time.sleep(0.05)
  workers[1].send_signal(signal.SIGTERM)  # one process only, as a preempted host
  errors = finish(workers, timeout=120)  # a hang fails here
  assert [worker.returncode for worker in workers] == [128 + signal.SIGTERM] * 2, errors
  stopped = [re.search(r'after saving a checkpoint at step (\d+);', error) for error in errors]
  assert all(stopped) and stopped[0].group(1) == stopped[1].group(1), errors
  assert int(stopped[0].group(1)) in {int(p.name) for p in checkpoints.iterdir()
                                      if p.name.isdigit()}
  # 'auto' took the device path: no data iterator's position was saved.
  assert not (checkpoints / stopped[0].group(1) / 'data').exists()
  errors = finish(launch_two(cut))  # resumed by both
  assert all(error.count('Traceback') == 0 for error in errors), errors[0][-3000:]
  assert writers.read_steps(str(cut)) == writers.read_steps(str(whole))
  drop = lambda history: [{k: v for k, v in r.items() if k not in ('seconds',
                                                                   'images_per_second')}
                          for r in history]
  assert drop(writers.read_history(str(cut))) == drop(writers.read_history(str(whole)))


EVALUATE_AS_ONE_OF_TWO = ONE_OF_TWO.replace(
    'WORK', "print('RESULT ' + json.dumps(evaluation.evaluate_saved(config, sys.argv[4])))")


def test_evaluate_mode_on_two_processes_gives_the_one_process_numbers(digits_run, digits_config,
                                                                       tmp_path):
  shutil.copytree(digits_run[0], tmp_path, dirs_exist_ok=True)
  digits_config.mode = 'evaluate'
  digits_config.eval_batch_size = 100  # 360 = 3 * 100 + 60: the last global batch padded
  one = evaluation.evaluate_saved(digits_config, str(tmp_path))
  address = f'127.0.0.1:{free_port()}'
  workers = [subprocess.Popen(
      [sys.executable, '-c', EVALUATE_AS_ONE_OF_TWO, address, str(index),
       json.dumps(flattened(digits_config)), str(tmp_path)],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}) for index in range(PROCESSES)]
  outputs = finish_output(workers)
  for output in outputs:
    results = [line for line in output.splitlines() if line.startswith('RESULT ')]
    assert results, output[-3000:]
    two = json.loads(results[-1][len('RESULT '):])
    assert two['count'] == one['count'] == 360
    for key in ('top1', 'top5', 'macro_f1'):
      assert two[key] == pytest.approx(one[key], abs=1e-6), key
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-5)
    assert two['best'] == json.loads(json.dumps(one['best']))  # JSON's lists for tuples
    assert two['worst'] == json.loads(json.dumps(one['worst']))


def finish_output(workers: list[subprocess.Popen], timeout: float = 180) -> list[str]:
  """Each worker's combined output once it exits successfully; kills both after `timeout`."""
  try:
    outputs = [worker.communicate(timeout=timeout)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  for index, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0, f'process {index}:\n{output[-3000:]}'
  return outputs
