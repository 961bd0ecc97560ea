"""build(config): everything a run needs, made from its config in one place.

The loop (`train.py`), evaluate and predict modes (`evaluation.py`), every
experiment, every benchmark and a notebook start here, so the setup sequence
exists once: mesh -> validation -> sources -> transforms -> steps per epoch ->
model -> state -> jitted steps, with batches from the `Run`'s methods. A run
built to evaluate or predict opens only the split it scores and holds an
abstract state (shapes by `jax.eval_shape`) for a checkpoint to fill.

From a notebook, with any working directory:

    run = build.build(build.load_config('quickstart'))
    state, metrics = run.train_step(run.state, run.device_batch(next(run.train_batches())))
"""

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import importlib.util
import json
import math
import pathlib
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import ml_collections
import optax

from tinyimagenet_jax import members
from tinyimagenet_jax import models
from tinyimagenet_jax import optim
from tinyimagenet_jax import parallel
from tinyimagenet_jax import programs
from tinyimagenet_jax import steps
from tinyimagenet_jax import tuning
from tinyimagenet_jax import validation
from tinyimagenet_jax.data import batch_ops
from tinyimagenet_jax.data import device_ops
from tinyimagenet_jax.data import resident
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.errors import ConfigError
from tinyimagenet_jax.state import (RUN_ONCE_COMPILER_OPTIONS, TrainState, create_train_state,
                                    run_once)

# grain (the host path's batches) is imported where that path starts: a run on the device
# path does not pay for it.
if TYPE_CHECKING:
  import grain

# The configs/ folder beside the package: an editable install or a clone of the repository.
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'
# config.steps_per_call=0: the most steps per call, within a divisor of the epoch (and of
# the checkpoint interval), so every call has one shape and signals wait at most this long.
# On CPU one: XLA:CPU ran conv4's step 3-6x slower inside a lax.scan than alone (WORKSPACE).
AUTO_STEPS_PER_CALL = {'cpu': 1}
AUTO_STEPS_PER_CALL_ACCELERATOR = 16
# A `config.quick_compile` run's compiler options, by backend and by what a program runs
# over: the run's few steps, compiled as a program that runs once is, or whole evaluation
# splits (which a smoke mode does not shrink). On XLA:CPU, the older fusion emitters with no
# LLVM optimisation compiled conv3's smoke train call in 0.39 s instead of 1.55 s (steps of
# 2.2 ms instead of 1.0); LLVM at -O1 compiles in about half the time with programs as fast
# (WORKSPACE.md, "Quick compiles").
QUICK_COMPILE_OPTIONS = {'cpu': {
    'steps': RUN_ONCE_COMPILER_OPTIONS['cpu'],
    'evaluation': {'xla_cpu_use_fusion_emitters': False, 'xla_backend_optimization_level': 1}}}


@dataclasses.dataclass
class DevicePath:
  """The device path (config.data.placement): every split resident on the devices, and
  the jitted calls that gather, augment and step on them."""

  splits: dict[str, resident.ResidentSplit]  # 'train' and each eval split by name
  steps_per_call: int
  # (state, data, order, position, first_step, seed, count) -> (state, metrics)
  train_call: programs.Program | resident.BatchThenStep
  eval_batch: programs.Program  # (data, index) -> that eval batch of the split, padded and masked
  epoch_order: programs.Program  # (epoch) -> that epoch's order of the training split


@dataclasses.dataclass
class Run:
  """A config made into a run: its mesh, data, model, state and jitted steps.

  `state` is replicated over `mesh`; for evaluate/predict it is abstract
  (shapes and shardings only) until a checkpoint is restored into it.
  `train_step(state, batch)` donates `state`; `eval_step(state, batch)` gives
  the evaluator's sums; `eval_outputs` adds each example's probabilities.
  """

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  train_source: Sequence | None
  eval_sources: dict[str, Sequence]
  class_names: tuple[str, ...]
  steps_per_epoch: int
  train_transform: transforms.Preprocess
  eval_transform: transforms.Preprocess
  model: nn.Module
  state: TrainState
  train_step: programs.Program
  eval_step: programs.Program
  eval_outputs: programs.Program
  device: DevicePath | None = None  # None: batches come from the host (grain)

  @property
  def member_count(self) -> int:
    """K: how many models the state stacks (1 for an ordinary run)."""
    return members.member_count(self.config)

  def train_batches(self) -> 'grain.DatasetIterator':
    """This process's rows of every training batch from step 0, endless; its position
    is checkpointable (the loop saves it with the state)."""
    return train_stream(self.config, self.train_source, self.train_transform)

  def eval_batches(self, name: str) -> Iterator[dict]:
    """One pass over eval split `name` in padded, masked batches (this process's rows)."""
    from tinyimagenet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.iterate(pipeline.eval_dataset(
        self.eval_sources[name], self.eval_transform, self.config.eval_batch_size,
        **process_rows()), self.config.data)

  def device_batch(self, host_batch: dict) -> dict:
    """A host batch as global arrays split over the mesh's `data` axis."""
    return parallel.put_batch(host_batch, self.mesh)


def train_stream(config: ml_collections.ConfigDict, source: Sequence,
                 transform: transforms.Preprocess) -> 'grain.DatasetIterator':
  """The training batches of `config` over `source` (`Run.train_batches`; the benchmarks
  time it alone)."""
  from tinyimagenet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.iterate(pipeline.train_dataset(
      source, transform, config.batch_size, config.seed, batch_ops.make_batch_transform(config),
      **process_rows()), config.data)


def process_rows() -> dict:
  """Which rows of every global batch this JAX process reads."""
  return {'process_index': jax.process_index(), 'process_count': jax.process_count()}


def load_config(name: str) -> ml_collections.ConfigDict:
  """`configs/<name>.py`'s get_config(), from any working directory: 'quickstart',
  'relu_vs_tanh:smoke' (the text after ':' is get_config's argument) or a file path."""
  stem, _, argument = name.partition(':')
  path = pathlib.Path(stem) if stem.endswith('.py') else CONFIGS_DIR / f'{stem}.py'
  if not path.is_file():
    raise ConfigError(f'config {stem!r} not found at {path}; name a file of {CONFIGS_DIR}'
                      ' or pass a path to a config file.')
  spec = importlib.util.spec_from_file_location(f'config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def steps_per_epoch_for(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """`config.steps_per_epoch`, or whole batches in one pass when it is 0."""
  sources.check_batch_fits(config.batch_size, num_examples)
  return config.steps_per_epoch or num_examples // config.batch_size


def run_optimizer(config: ml_collections.ConfigDict,
                  steps_per_epoch: int) -> optax.GradientTransformation:
  """The state's optimizer: the configured one, scaled per member for stacked members."""
  tx = optim.build_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
  return tx if members.member_count(config) == 1 else optax.chain(tx, members.scale_updates())


def state_options(config: ml_collections.ConfigDict) -> dict:
  """The TrainState's static loss options."""
  return dict(label_smoothing=config.label_smoothing, compute_dtype=config.compute_dtype)


def initial_state(config: ml_collections.ConfigDict, model: nn.Module,
                  tx: optax.GradientTransformation, input_shape: tuple[int, ...],
                  seeds: jax.Array) -> TrainState:
  """The fresh state (`tx` from `run_optimizer`, `seeds` the members' seeds as
  `resident.seed_argument`): one model, or `members.member_count(config)` stacked members."""
  if members.member_count(config) == 1:
    return create_train_state(model, tx, seeds[0], input_shape, **state_options(config))
  scales = [rate / config.optimizer.learning_rate for rate in members.member_learning_rates(config)]
  return members.create_member_states(model, tx, seeds, scales, input_shape,
                                      **state_options(config))


def steps_per_call_for(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Steps per call: the largest divisor of the epoch (and of the checkpoint interval) up to
  `config.steps_per_call`, or when it is 0 up to the backend's AUTO_STEPS_PER_CALL."""
  limit = config.steps_per_call or AUTO_STEPS_PER_CALL.get(jax.default_backend(),
                                                           AUTO_STEPS_PER_CALL_ACCELERATOR)
  period = math.gcd(steps_per_epoch, config.checkpoint_every_steps or steps_per_epoch)
  return max(size for size in range(1, min(limit, period) + 1) if period % size == 0)


# Config fields that no program reads: the seed is the programs' argument
# (`resident.seed_argument`); init_from's weights are loaded into the state after it is made.
OUTSIDE_PROGRAMS = ('seed', 'init_from')


def run_context(config: ml_collections.ConfigDict, **derived) -> str:
  """What fixes a run's programs besides their arguments (`programs.Program`'s context):
  the config less OUTSIDE_PROGRAMS, and the values its build derived from the data."""
  fields = json.loads(config.to_json_best_effort(sort_keys=True))
  for name in OUTSIDE_PROGRAMS:
    fields.pop(name, None)
  return json.dumps([fields, derived], sort_keys=True)


def compiler_options(config: ml_collections.ConfigDict) -> dict[str, dict | None]:
  """The compiler options of a run's programs by what they run over ('steps',
  'evaluation'): the backend's QUICK_COMPILE_OPTIONS when `config.quick_compile`, else
  XLA's defaults (None)."""
  quick = (QUICK_COMPILE_OPTIONS.get(jax.default_backend(), {}) if config.get('quick_compile')
           else {})
  return {runs_over: quick.get(runs_over) for runs_over in ('steps', 'evaluation')}


def defined_here(model: nn.Module) -> bool:
  """Whether `model`'s class is this package's (so its source is in the programs' key)."""
  return type(model).__module__.split('.')[0] == __name__.split('.')[0]


def device_path(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                train_source: Sequence, eval_sources: dict[str, Sequence],
                train_step_fn: Callable, steps_per_epoch: int, context: str,
                options: dict[str, dict | None]) -> DevicePath:
  """Every split put in device memory, with jitted calls that step on it (kept in
  `context`, compiled with the run's `compiler_options`)."""
  everywhere, batches = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  constrain = lambda batch: jax.lax.with_sharding_constraint(batch, batches)
  splits = {name: resident.put_resident(source, everywhere)
            for name, source in {'train': train_source, **eval_sources}.items()}
  make_batch = device_ops.make_train_batch(config)
  steps_per_call = steps_per_call_for(config, steps_per_epoch)
  if steps_per_call == 1 and device_ops.batch_apart(config):
    train_call = resident.BatchThenStep(
        # The batch reads only the data and augmentation settings and the batch size: runs
        # that differ elsewhere (the model, the optimizer) share its program.
        programs.Program(jax.jit(resident.training_batch(make_batch, config.batch_size),
                                 in_shardings=(everywhere,) * 5, out_shardings=batches),
                         'train_batch',
                         run_context(config.data, augment=config.augment.to_dict(),
                                     batch_size=config.batch_size),
                         compiler_options={**device_ops.BATCH_APART_OPTIONS,
                                           **(options['steps'] or {})}),
        programs.Program(jax.jit(resident.one_step_stacked(train_step_fn), donate_argnums=0,
                                 in_shardings=(everywhere, batches),
                                 out_shardings=(everywhere, everywhere)),
                         'train_step_call', context, compiler_options=options['steps']))
  else:
    train_call = programs.Program(
        jax.jit(resident.train_call(train_step_fn, make_batch, config.batch_size, constrain),
                static_argnums=6, donate_argnums=0, in_shardings=(everywhere,) * 6,
                out_shardings=(everywhere, everywhere)),
        'train_call', context, static_argnums=(6,), compiler_options=options['steps'])
  count = len(train_source)
  return DevicePath(
      splits, steps_per_call, train_call,
      # These two read only what their contexts name, so runs that differ elsewhere share them.
      programs.Program(jax.jit(resident.eval_batch(device_ops.make_eval_batch(config),
                                                   config.eval_batch_size),
                               in_shardings=(everywhere, everywhere), out_shardings=batches),
                       'eval_batch', run_context(config.data, batch_size=config.eval_batch_size),
                       compiler_options=options['evaluation']),
      # Integer work, so the same permutation under any options: the run-once ones compiled
      # it in 0.09-0.11 s instead of 0.24-0.29 (XLA:CPU), at 0-10 ms more an epoch for
      # 1,437-100,000 examples (WORKSPACE.md, "Convolutions smaller than their kernel;
      # checkpoints at most every 30 s").
      programs.Program(jax.jit(lambda epoch: resident.epoch_order(config.seed, epoch, count),
                               out_shardings=everywhere),
                       'epoch_order', json.dumps([config.seed, count]),
                       compiler_options=RUN_ONCE_COMPILER_OPTIONS.get(jax.default_backend())))


def open_sources(config: ml_collections.ConfigDict, purpose: str
                 ) -> tuple[Sequence | None, dict[str, Sequence]]:
  """(train source, named eval sources): training reads every split it uses; evaluate
  and predict only `data.eval_split` (predict also unlabelled ones)."""
  if purpose == 'train':
    splits = sources.load_splits(config.data, config.seed, config.batch_size)
    return splits.train, splits.evals
  load = sources.load_for_prediction if purpose == 'predict' else sources.load
  return None, {config.data.eval_split: load(config.data, config.data.eval_split)}


def build(config: ml_collections.ConfigDict, purpose: str = 'train') -> Run:
  """Everything a run of `config` needs for `purpose` ('train', 'evaluate', 'predict')."""
  tuning.use_compilation_cache(config.get('compilation_cache_dir', ''))
  mesh = parallel.make_mesh()
  validation.validate(config, mesh.size)
  train_source, eval_sources = open_sources(config, purpose)
  some_source = train_source if train_source is not None else next(iter(eval_sources.values()))
  train_transform, eval_transform = transforms.make_preprocess(config)
  steps_per_epoch = (steps_per_epoch_for(config, len(train_source)) if purpose == 'train'
                     else max(config.steps_per_epoch, 1))  # shapes do not depend on it
  class_names = some_source.class_names
  model = models.build_model(config.model, len(class_names))
  input_shape = eval_transform.output_shape(sources.image_shape(some_source))
  tx = run_optimizer(config, steps_per_epoch)
  options = compiler_options(config)
  make_state = lambda seeds: initial_state(config, model, tx, input_shape, seeds)
  context = run_context(config, steps_per_epoch=steps_per_epoch, classes=len(class_names),
                        input_shape=input_shape,
                        train_examples=len(train_source) if train_source is not None else 0
                        ) if defined_here(model) else None
  # One compiled program makes the whole state in place (eagerly, optax's and the key's small
  # ops were a dozen programs: 0.7 s of the quickstart's start-up). Its output tree is
  # stored by reference to the state's static part (model, optimizer).
  static_part = TrainState(None, None, None, None, None, model.apply, tx, **state_options(config))
  seeds = resident.seed_argument(members.member_seeds(config))
  state = (run_once(make_state, seeds, out_shardings=parallel.replicated(mesh),
                    name='initial_state', context=context, known_outputs=static_part)
           if purpose == 'train' else
           jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=parallel.replicated(mesh)),
                        jax.eval_shape(make_state, seeds)))
  stacked = members.member_count(config) > 1
  wrap = ((lambda step_fn: members.member_step(step_fn, config.members.formulation)) if stacked
          else (lambda step_fn: step_fn))
  step_fns = {'train': wrap(steps.train_step), 'eval': wrap(steps.eval_step)}
  on_device = (purpose == 'train' and resident.resolve_placement(
      config, [train_source, *eval_sources.values()]) == 'device')
  return Run(config, mesh, train_source, eval_sources, class_names, steps_per_epoch,
             train_transform, eval_transform, model, state,
             train_step=parallel.jit_train_step(mesh, step_fns['train'], context,
                                                options['steps']),
             eval_step=parallel.jit_eval_step(mesh, step_fns['eval'], context,
                                              compiler_options=options['evaluation']),
             eval_outputs=parallel.jit_eval_step(mesh, wrap(steps.eval_outputs), context,
                                                 'eval_outputs', options['evaluation']),
             device=device_path(config, mesh, train_source, eval_sources, step_fns['train'],
                                steps_per_epoch, context, options) if on_device else None)
