"""Scaling: the same global batch on 1, 2, 4 and 8 simulated CPU devices.

`scaling`: conv4 (global batch 128, 32x32, 10 classes, SGD with momentum) on
random data, each device count in a fresh interpreter (the simulated device
count is fixed when JAX starts). Each runs the project's path (`make_mesh`,
`put_replicated`, `compile_step`, `put_batch`) and reports the losses of
its first `LOSS_STEPS` steps from the same initial state, which must equal the
1-device ones (the max difference is reported, and a larger one than float
rounding raises), then steps/s: the median of `--repeats` blocks of
`--batches` steps after `--warmup` steps, on a batch already on the devices.

Simulated devices share the machine's cores (2 here), so more devices cannot
run faster: what the times show is the overhead of splitting the batch and
all-reducing the gradients, not a speed-up.
"""

import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax

from tinyimagenet_jax import models, parallel
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.state import create_train_state

DEVICE_COUNTS = (1, 2, 4, 8)
GLOBAL_BATCH = 128
IMAGE_SIZE = 32
NUM_CLASSES = 10
LOSS_STEPS = 5
LOSS_TOLERANCE = 1e-4  # relative: float32 sums taken in another order


def random_batches(count: int) -> list[dict[str, np.ndarray]]:
  """`count` distinct global batches of standard-normal images and uniform labels."""
  rng = np.random.default_rng(0)
  return [{'image': rng.standard_normal((GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32),
           'label': rng.integers(0, NUM_CLASSES, GLOBAL_BATCH, dtype=np.int32)}
          for _ in range(count)]


def measure_here(batches: int, warmup: int, repeats: int) -> dict:
  """Losses of the first steps and seconds per block of `batches` steps, on every device
  of this process (run in a fresh interpreter per device count)."""
  mesh = parallel.make_mesh()
  model = models.build_model(ml_collections.ConfigDict({'name': 'conv4'}), NUM_CLASSES)
  state = parallel.put_replicated(create_train_state(
      model, optax.sgd(0.01, momentum=0.9), 0, (IMAGE_SIZE, IMAGE_SIZE, 3)), mesh)
  host_batches = random_batches(LOSS_STEPS)
  step = parallel.compile_step(parallel.jit_train_step(mesh), state, host_batches[0], mesh)
  losses = []
  for host_batch in host_batches:
    state, metrics = step(state, parallel.put_batch(host_batch, mesh))
    losses.append(float(metrics['loss']))
  batch = parallel.put_batch(host_batches[0], mesh)

  def run(count: int) -> None:
    nonlocal state
    for _ in range(count):
      state, _ = step(state, batch)
    jax.block_until_ready(state)

  run(warmup)
  seconds = [common.seconds(lambda: run(batches)) for _ in range(repeats)]
  return {'devices': mesh.size, 'losses': losses, 'seconds': seconds}


def measure_in_fresh_process(devices: int, args: common.Args) -> dict:
  """`measure_here` in a new interpreter started with `devices` simulated CPU devices."""
  result = subprocess.run(
      [sys.executable, '-m', 'tinyimagenet_jax.bench.scaling', str(devices), str(args.batches),
       str(args.warmup), str(args.repeats)],
      cwd=pathlib.Path(__file__).resolve().parents[2], capture_output=True, text=True,
      check=False)
  if result.returncode:
    raise RuntimeError(f'the {devices}-device run failed:\n{result.stderr[-3000:]}')
  run = json.loads(result.stdout.strip().splitlines()[-1])
  if run['devices'] != devices:
    raise RuntimeError(f"asked for {devices} simulated devices, the run saw {run['devices']}.")
  return run


def scaling(args: common.Args) -> list[dict]:
  """One row per device count: first losses, their max difference to 1 device, steps/s,
  and the time per step relative to 1 device (the overhead of sharding)."""
  runs = [measure_in_fresh_process(devices, args) for devices in DEVICE_COUNTS]
  reference = np.asarray(runs[0]['losses'])
  rows = []
  for run in runs:
    difference = float(np.max(np.abs(np.asarray(run['losses']) - reference)))
    if difference > LOSS_TOLERANCE * np.max(np.abs(reference)):
      raise AssertionError(f"{run['devices']} devices gave losses {run['losses']}, not the"
                           f' 1-device {reference.tolist()}: sharding changed the step.')
    step_seconds = common.median(run['seconds']) / args.batches
    rows.append({
        'what': 'scaling', 'model': 'conv4', 'devices': run['devices'],
        'global_batch': GLOBAL_BATCH, 'rows_per_device': GLOBAL_BATCH // run['devices'],
        'first_losses': [round(loss, 6) for loss in run['losses']],
        'max_loss_difference': float(f'{difference:.2e}'),
        'steps_per_second': round(1 / step_seconds, 2),
        'images_per_second': round(GLOBAL_BATCH / step_seconds, 1),
        'time_per_step_vs_1_device': round(
            step_seconds / (common.median(runs[0]['seconds']) / args.batches), 3),
    })
  return rows


if __name__ == '__main__':
  jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
  print(json.dumps(measure_here(*(int(value) for value in sys.argv[2:5]))))
