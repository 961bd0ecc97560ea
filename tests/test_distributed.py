"""Two JAX processes on 127.0.0.1 (jax.distributed, CPU collectives) train as one.

Each process runs the real `train_and_evaluate` with two simulated CPU devices,
reads only its own rows of every batch and saves its part of each Orbax
checkpoint; the run, stopped after one epoch and resumed for the second,
matches a single-process run on one device step for step. The digits config
trains a small MLP here: the same machinery as conv4 for a third of the compile
time, which four processes pay.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import checkpoint, parallel, train, writers

from helpers import REPO

PROCESSES = 2

TRAIN_AS_ONE_OF_TWO = '''
import json, sys
import jax

if __name__ == '__main__':
  jax.config.update('jax_num_cpu_devices', 2)
  jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                             process_id=int(sys.argv[2]), heartbeat_timeout_seconds=600)
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  from tinyimagenet_jax import config as config_lib, train
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
  config = config_lib.base_config()
  config.update_from_flattened_dict(json.loads(sys.argv[3]))
  train.train_and_evaluate(config, sys.argv[4])
  jax.distributed.shutdown()
'''


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
  try:
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  for index, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0, f'process {index}:\n{output[-3000:]}'


def test_two_processes_train_like_one(digits_config, tmp_path):
  digits_config.model = ml_collections.ConfigDict({'name': 'mlp', 'hidden': (32,)})
  digits_config.steps_per_epoch = 3
  digits_config.data.placement = 'host'  # the rows each process reads of every batch
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
    restored = saved.restore_state(parallel.put_replicated(state, parallel.make_mesh()))
  finally:
    saved.close()
  assert int(restored.step) == 6
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6),
               jax.device_get((restored.params, restored.opt_state)),
               jax.device_get((state.params, state.opt_state)))
