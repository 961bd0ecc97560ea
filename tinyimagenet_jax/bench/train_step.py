"""Train-step speed: this project's jitted step against PyTorch and Keras on the same models.

`train_step`: images/s of a full training step (forward, backward, plain SGD
at lr 0.01) on a fixed random batch already in place, for conv4 (batch 128,
32x32, 10 classes), lenet5 (batch 64, 32x32, 100 classes) and resnet18
(batch 64, 64x64, 200 classes). The contenders, alternated in one process
(`--repeats` rounds of `--batches` steps after `--warmup` steps):

  jax    the project's path: `build_model`, `create_train_state`, the optimizer
         from the config, `parallel.compile_step` on a 1-device mesh
         (state donated), blocking on the last new state;
  torch  the twin in `torch_models` (equal parameter count, equal logits given
         the same weights), eager, channels_last, torch.optim.SGD, as many
         intra-op threads as XLA uses;
  keras  the twin in `keras_models` on TensorFlow, `train_on_batch` (plain
         graph mode: Keras does not XLA-compile on CPU by default).

Each model also gets a bfloat16 row: the state's compute dtype bfloat16 for
JAX, `torch.autocast('cpu', bfloat16)` for torch; Keras is not run there.
"""

from collections.abc import Callable
import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import models, optim, parallel
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.state import create_train_state


@dataclasses.dataclass(frozen=True)
class BenchModel:
  """One benchmarked model's batch size, square image side and class count."""

  batch: int
  image_size: int
  num_classes: int


BENCH_MODELS = {
    'conv4': BenchModel(batch=128, image_size=32, num_classes=10),
    'lenet5': BenchModel(batch=64, image_size=32, num_classes=100),
    'resnet18': BenchModel(batch=64, image_size=64, num_classes=200),
}
DTYPES = ('float32', 'bfloat16')
LEARNING_RATE = 0.01

# A contender: runs that many training steps and returns once they are done.
Steps = Callable[[int], None]


def selected_models(args: common.Args) -> tuple[str, ...]:
  """`args.models`, or all benchmarked models; an error naming the valid ones on a typo."""
  unknown = sorted(set(args.models) - set(BENCH_MODELS))
  if unknown:
    raise ValueError(f'--models={unknown[0]} is not a benchmarked model; choose from: '
                     + ', '.join(BENCH_MODELS))
  return args.models or tuple(BENCH_MODELS)


def xla_cpu_threads() -> int:
  """The CPUs this process may run on: the size of XLA's CPU intra-op thread pool."""
  return len(os.sched_getaffinity(0))


def random_batch(spec: BenchModel, seed: int = 0) -> dict[str, np.ndarray]:
  """A fixed batch of standard-normal NHWC images and uniform labels, as the pipeline gives."""
  rng = np.random.default_rng(seed)
  shape = (spec.batch, spec.image_size, spec.image_size, 3)
  return {'image': rng.standard_normal(shape, np.float32),
          'label': rng.integers(0, spec.num_classes, spec.batch, dtype=np.int32)}


def plain_sgd() -> ml_collections.ConfigDict:
  """The optimizer config of the race: SGD at LEARNING_RATE, no momentum, decay or clipping."""
  optimizer = base_config().optimizer
  optimizer.name, optimizer.learning_rate, optimizer.momentum = 'sgd', LEARNING_RATE, 0.0
  return optimizer


def jax_steps(name: str, spec: BenchModel, batch: dict, dtype: str) -> Steps:
  """The project's compiled train step on one device, the batch and state already there."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = models.build_model(ml_collections.ConfigDict({'name': name}), spec.num_classes)
  state = parallel.put_replicated(create_train_state(
      model, optim.build_optimizer(plain_sgd(), 1, 1), 0, batch['image'].shape[1:],
      compute_dtype=dtype), mesh)
  step = parallel.compile_step(parallel.jit_train_step(mesh), state, batch, mesh)
  device_batch = parallel.put_batch(batch, mesh)

  def run(steps: int) -> None:
    nonlocal state
    for _ in range(steps):
      state, _ = step(state, device_batch)
    jax.block_until_ready(state)  # the metrics come from the same program, done with it

  return run


def torch_steps(name: str, spec: BenchModel, batch: dict, dtype: str) -> Steps:
  """The torch twin's eager step: channels_last, SGD, autocast to bfloat16 when asked."""
  import torch  # pylint: disable=import-outside-toplevel
  from tinyimagenet_jax.bench import torch_models  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = torch_models.MODELS[name](spec.num_classes, spec.image_size)
  model = model.to(memory_format=torch.channels_last).train()
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
  images = torch.from_numpy(batch['image']).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last)
  labels = torch.from_numpy(batch['label']).long()

  def run(steps: int) -> None:
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      optimizer.step()

  return run


def keras_steps(name: str, spec: BenchModel, batch: dict) -> Steps:
  """The Keras twin's `train_on_batch` (it returns the loss as numpy: it blocks)."""
  from tinyimagenet_jax.bench import keras_models  # pylint: disable=import-outside-toplevel
  keras = keras_models.import_keras()
  keras.utils.set_random_seed(0)
  model = keras_models.MODELS[name](spec.num_classes, spec.image_size)
  model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  images, labels = keras.ops.convert_to_tensor(batch['image']), keras.ops.convert_to_tensor(
      batch['label'])

  def run(steps: int) -> None:
    for _ in range(steps):
      model.train_on_batch(images, labels)

  return run


def set_thread_counts(threads: int) -> dict:
  """Torch and TensorFlow intra-op threads set to `threads`; the counts they report."""
  import torch  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(threads)
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  return {'xla_threads': threads, 'torch_threads': torch.get_num_threads(),
          'tf_threads': tf.config.threading.get_intra_op_parallelism_threads()}


def images_per_second(seconds: list[float], steps: int, batch: int) -> float:
  """Throughput of the median round."""
  return steps * batch / common.median(seconds)


def contenders(name: str, dtype: str) -> dict[str, Steps]:
  """The steps of `name` in `dtype` for each framework, all on the same fixed batch."""
  spec = BENCH_MODELS[name]
  batch = random_batch(spec)
  steps = {'jax': jax_steps(name, spec, batch, dtype),
           'torch': torch_steps(name, spec, batch, dtype)}
  if dtype == 'float32':
    steps['keras'] = keras_steps(name, spec, batch)
  return steps


def race(steps: dict[str, Steps], args: common.Args) -> dict[str, list[float]]:
  """Seconds per round of each contender: `warmup` steps each, then alternated rounds."""
  for run in steps.values():
    run(args.warmup)
  return common.alternate({who: functools.partial(run, args.batches)
                           for who, run in steps.items()}, args.repeats)


def table_row(name: str, dtype: str, times: dict[str, list[float]], args: common.Args) -> dict:
  """Median images/s of each contender and JAX's ratios to the others."""
  batch = BENCH_MODELS[name].batch
  rates = {who: images_per_second(seconds, args.batches, batch) for who, seconds in times.items()}
  return {'model': name, 'dtype': dtype, 'batch': batch,
          'image': f'{BENCH_MODELS[name].image_size}x{BENCH_MODELS[name].image_size}x3',
          **{f'{who}_images_per_second': round(rates[who], 1) for who in ('jax', 'torch')},
          'keras_images_per_second': (round(rates['keras'], 1) if 'keras' in rates
                                      else 'skipped (bfloat16 not compared)'),
          'jax_over_torch': round(rates['jax'] / rates['torch'], 2),
          'jax_over_keras': round(rates['jax'] / rates['keras'], 2) if 'keras' in rates else '',
          'steps': args.batches, 'repeats': args.repeats}


def train_step_speed(args: common.Args) -> list[dict]:
  """Images/s of the JAX, torch and Keras train steps per model and dtype, with ratios."""
  names = selected_models(args)
  threads = set_thread_counts(xla_cpu_threads())
  return [{**table_row(name, dtype, race(contenders(name, dtype), args), args), **threads}
          for name in names for dtype in DTYPES]
