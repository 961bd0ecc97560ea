"""Time to result: a run's wall time against the sum of its training steps' isolated math.

`time_to_result` runs each case as a user runs it, `python launch.py --config=...` in a
fresh process and a fresh workdir, with batches made on the host and on the device
(`--config.data.placement=host|device`, alternated), each first with a cold JAX
compilation cache (a fresh empty folder), then warm (the folder the cold run filled).
A run's math is its train step alone, compiled, on one batch already on the device,
timed over up to `--batches` steps (after `--warmup`) and scaled to the steps the run
took (its steps.jsonl), summed over an experiment's runs. Each epoch's evaluations are math
too, timed the same way (`eval_math_s`): `ratio` is wall over the steps' math,
`ratio_with_eval` over both. `epochs_s` is the training seconds the runs themselves logged
(metrics.jsonl): on a machine whose speed drifts it tells a slower run from a heavier
one, as wall - epochs_s is what a run spent around its epochs. The goals (issue 14): the
quickstart's wall at most 1.3x its steps' math cold and 1.15x warm; each smoke mode within
20 s.

Cases (`--models` picks some, by name): the quickstart; conv4 on CIFAR-10 for
`--batches` steps, then its test split, from ../shared/data's JPEGs (unpacked into a
temporary folder, read through the decoded cache); tiny_m1 on a 10-class Tiny ImageNet
subset built with TFDS from ../shared/data's archive (needs TensorFlow; skipped with the
reason where it cannot be built); each experiment's smoke mode. Data preparation (the
decoded cache, the TFDS build) happens before the timed runs. `--repeats` repeats the
whole alternation, with fresh cold folders; the rows give medians.

    python -m tinyimagenet_jax.bench --what=time_to_result --repeats=1 --batches=200
"""

from collections.abc import Sequence
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import jax
import ml_collections

from tinyimagenet_jax import build
from tinyimagenet_jax import evaluation
from tinyimagenet_jax import parallel
from tinyimagenet_jax import writers
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.data import sources

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / 'shared' / 'data'
PLACEMENTS = ('host', 'device')
SMOKES = ('relu_vs_tanh', 'cifar10_conv3', 'tiny_models', 'cifar100_lenet', 'tiny_ensembles')
# Ceilings: the quickstart's wall / math with a cold and a warm cache; a smoke mode's wall.
QUICKSTART_RATIO_GOALS = {'cold': 1.3, 'warm': 1.15}
SMOKE_GOAL_SECONDS = 20.0
# What launch.py imports before a run's first step, run from the repository's root.
STARTUP_IMPORTS = 'import launch; from tinyimagenet_jax import evaluation, train'


@dataclasses.dataclass(frozen=True)
class Case:
  """A run to time: a config file (with its ':arg'), overrides, and the shared archive
  its data comes from ('' for the offline digits)."""

  name: str
  config: str
  overrides: dict = dataclasses.field(default_factory=dict)
  archive: str = ''


def cases(scratch: pathlib.Path, steps: int) -> dict[str, Case]:
  """Every case by name; the CIFAR-10 and Tiny ImageNet ones train `steps` steps."""
  short = {'steps_per_epoch': steps, 'num_epochs': 1, 'data.decoded_cache': True}
  return {
      'quickstart': Case('quickstart', 'configs/quickstart.py'),
      'cifar10_conv4': Case('cifar10_conv4', 'configs/conv4_relu.py', {
          'data.name': 'image_folder', **short,
          'data.root': str(scratch / 'cifar-10-images-jpg')}, 'cifar-10-images-jpg.tgz'),
      'tiny_m1': Case('tiny_m1', 'configs/tiny_ensembles.py', {
          'experiment': '', 'model.name': 'tiny_m1', **short, 'batch_size': 32,
          'data.manual_dir': str(SHARED_DATA), 'data.data_dir': str(scratch / 'tfds'),
          'data.download': False, 'data.subset_classes': 10,
          'data.subset_split': (100, 20, 20)}, 'tiny-imagenet-200.tgz'),
      **{f'{name}:smoke': Case(f'{name}:smoke', f'configs/{name}.py:smoke') for name in SMOKES},
  }


def flag_value(value) -> str:
  """A config value as launch.py's --config.<key>= flag reads it back."""
  if isinstance(value, tuple):
    return '(' + ','.join(map(str, value)) + (',)' if len(value) == 1 else ')')
  return str(value)


def launch_flags(case: Case, placement: str, workdir: pathlib.Path) -> list[str]:
  """launch.py's command line for `case` with batches made on `placement`."""
  overrides = {**case.overrides, 'data.placement': placement}
  return [f'--config={case.config}', f'--workdir={workdir}',
          *(f'--config.{key}={flag_value(value)}' for key, value in overrides.items())]


def case_config(case: Case) -> ml_collections.ConfigDict:
  """The config launch.py makes for `case` (before the placement)."""
  config = build.load_config(str(REPO / case.config.split(':')[0]) + (
      ':' + case.config.split(':')[1] if ':' in case.config else ''))
  config.update_from_flattened_dict(case.overrides)
  return config


def unpack(archive: pathlib.Path, target: pathlib.Path) -> None:
  """Unpacks a .tgz into `target`: with GNU tar where there is one (a quarter of tarfile's time)."""
  if shutil.which('tar'):
    subprocess.run(['tar', 'xzf', str(archive), '-C', str(target)], check=True)
  else:
    with tarfile.open(archive) as tar:
      tar.extractall(target, filter='data')


def prepare(case: Case, scratch: pathlib.Path) -> str:
  """Unpacks the case's archive and builds its data (decoded cache, TFDS), outside the
  timed runs; '' when ready, else why the case is skipped."""
  if not case.archive:
    return ''
  archive = SHARED_DATA / case.archive
  if not archive.exists():
    return f'{archive} is absent'
  config = case_config(case)
  if config.data.name == 'image_folder' and not pathlib.Path(config.data.root).exists():
    unpack(archive, scratch)
  config.data.download = True  # a TFDS build from manual_dir (needs TensorFlow)
  try:
    sources.load_splits(config.data, config.seed)
  except Exception as error:  # pylint: disable=broad-except
    return f'its data could not be prepared here: {type(error).__name__}: {error}'
  return ''


def launch_seconds(case: Case, placement: str, workdir: pathlib.Path,
                   cache_dir: pathlib.Path) -> tuple[float, str]:
  """Wall seconds of `python launch.py` for the case, in a fresh process using the JAX
  compilation cache in `cache_dir`; and its error line ('' when it succeeded)."""
  command = [sys.executable, 'launch.py', *launch_flags(case, placement, workdir)]
  start = time.perf_counter()
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(cache_dir)})
  seconds = time.perf_counter() - start
  lines = result.stderr.strip().splitlines() or ['no output']
  return seconds, '' if result.returncode == 0 else f'exit {result.returncode}: {lines[-1]}'


def run_folders(workdir: pathlib.Path) -> list[pathlib.Path]:
  """Every run under `workdir` (one, or an experiment's): folders with config.json and steps."""
  return sorted(path.parent for path in workdir.rglob(writers.STEPS_JSONL)
                if (path.parent / 'config.json').exists())


def as_tuples(value):
  """JSON's lists back as the config's tuples, at every depth."""
  if isinstance(value, dict):
    return {key: as_tuples(item) for key, item in value.items()}
  return tuple(as_tuples(item) for item in value) if isinstance(value, list) else value


def saved_config(folder: pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run trained with, from its config.json."""
  return ml_collections.ConfigDict(as_tuples(json.loads((folder / 'config.json').read_text())))


def isolated_seconds(config: ml_collections.ConfigDict, sample: int, warmup: int
                     ) -> tuple[float, float]:
  """(one train step, one epoch's evaluations) of `config` alone, in seconds: the step
  compiled, on one batch already on the device, the mean of `sample` steps after `warmup`;
  the evaluation of every eval split of the run, compiled, the mean of 3 after one."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.placement = 'host'  # one batch on the device is all the step reads
  run = build.build(config)
  stream = run.train_batches()
  host_batch = next(stream)
  stream.close()
  step = parallel.compile_step(run.train_step, run.state, host_batch, run.mesh)
  state, batch = run.state, run.device_batch(host_batch)

  def steps(count: int) -> None:
    nonlocal state
    for _ in range(count):
      state, _ = step(state, batch)
    jax.block_until_ready(state)

  def evaluations() -> None:
    for name in run.eval_sources:
      evaluation.evaluate(run, state, name)

  steps(warmup)
  evaluations()
  return (common.seconds(lambda: steps(sample)) / sample,
          common.seconds(lambda: [evaluations() for _ in range(3)]) / 3)


def math_seconds(workdir: pathlib.Path, sample: int, warmup: int) -> tuple[int, float, float]:
  """(steps, step seconds, evaluation seconds): the steps every run under `workdir` took,
  the sum of their isolated math (each run's step time times its steps), and the same for
  the evaluations after each epoch."""
  total_steps, step_total, eval_total = 0, 0.0, 0.0
  for folder in run_folders(workdir):
    count = len(writers.read_steps(str(folder)))
    if count:
      step, evaluations = isolated_seconds(saved_config(folder), min(count, sample), warmup)
      total_steps += count
      step_total += count * step
      eval_total += len(writers.read_history(str(folder))) * evaluations
  return total_steps, step_total, eval_total


def epoch_seconds(workdir: pathlib.Path) -> float:
  """The training seconds every run under `workdir` logged for its epochs (metrics.jsonl):
  the steps as they ran in the run, data waits included; the wall time beyond it is what
  the run spent around its epochs (start-up, evaluations, saves, figures, exit)."""
  return sum(record['seconds'] for folder in run_folders(workdir)
             for record in writers.read_history(str(folder)))


def ratio(wall: float, math: float) -> float | None:
  """Wall time over the math (None without math to compare with)."""
  return round(wall / math, 2) if math > 0 else None


def startup_seconds(repeats: int = 3) -> float:
  """The median wall of a fresh interpreter importing STARTUP_IMPORTS and nothing more: the
  least any run started from launch.py spends beyond its math."""
  command = [sys.executable, '-c', STARTUP_IMPORTS]
  return common.median([common.seconds(lambda: subprocess.run(command, cwd=REPO, check=True))
                        for _ in range(repeats)])


def goal(case: str, cache: str, wall: float, wall_over_math: float | None,
         floor: float | None = None) -> str:
  """The issue's goal for this row, and whether it was met ('' where none is set); a ratio
  goal below the row's `floor` (`ratio_floor`) says that no run can meet it."""
  if case == 'quickstart' and wall_over_math is not None:
    ceiling = QUICKSTART_RATIO_GOALS[cache]
    verdict = 'met' if wall_over_math <= ceiling else 'not met'
    if floor is not None and floor > ceiling:
      verdict += f' (start-up alone puts the floor at {floor})'
    return f'ratio <= {ceiling}: {verdict}'
  if case.endswith(':smoke'):
    met = 'met' if wall <= SMOKE_GOAL_SECONDS else 'not met'
    return f'wall <= {SMOKE_GOAL_SECONDS:.0f} s: {met}'
  return ''


def measure(case: Case, scratch: pathlib.Path, args: common.Args, startup_s: float,
            placements: Sequence[str] = PLACEMENTS) -> list[dict]:
  """One row per placement and cache (cold, warm): median wall, steps, math, ratio, and the
  ratio's floor with `startup_s` (`startup_seconds`)."""
  walls = {(placement, cache): [] for cache in ('cold', 'warm') for placement in placements}
  errors, loads, epochs, math = {}, {key: [] for key in walls}, {key: [] for key in walls}, None
  for repeat in range(args.repeats):
    for cache in ('cold', 'warm'):  # a fresh folder for cold; warm reuses what it filled
      for placement in placements:  # alternated
        key = (placement, cache)
        cache_dir = scratch / 'jax_cache' / case.name / placement / str(repeat)
        workdir = scratch / 'runs' / case.name / placement / cache / str(repeat)
        loads[key].append(os.getloadavg()[0])
        seconds, error = launch_seconds(case, placement, workdir, cache_dir)
        walls[key].append(seconds)
        epochs[key].append(epoch_seconds(workdir))
        errors[key] = errors.get(key) or error
        if math is None and not error:
          math = math_seconds(workdir, args.batches, args.warmup)
  steps, math_s, eval_s = math or (0, 0.0, 0.0)
  rows = []
  for (placement, cache), seconds in walls.items():
    wall = common.median(seconds)
    row = {'case': case.name, 'placement': placement, 'cache': cache, 'steps': steps,
           'wall_s': round(wall, 2), 'math_s': round(math_s, 4),
           'ratio': ratio(wall, math_s), 'eval_math_s': round(eval_s, 4),
           'ratio_with_eval': ratio(wall, math_s + eval_s),
           'epochs_s': round(common.median(epochs[placement, cache]), 2),
           'load_1min': round(common.median(loads[placement, cache]), 2),
           'startup_s': round(startup_s, 2), 'ratio_floor': ratio(math_s + startup_s, math_s)}
    row['goal'] = goal(case.name, cache, wall, row['ratio'], row['ratio_floor'])
    if errors[placement, cache]:
      row['goal'], row['error'] = 'not met: the run failed', errors[placement, cache]
    rows.append(row)
  return rows


def time_to_result(args: common.Args) -> list[dict]:
  """Rows for every chosen case (`args.models`, default all): see the module doc."""
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='time_to_result_'))
  try:
    everything = cases(scratch, args.batches)
    unknown = sorted(set(args.models) - set(everything))
    if unknown:
      raise ValueError(f'unknown cases {unknown}; choose from {", ".join(everything)}')
    startup_s = startup_seconds()
    print(f'start-up (python -c "{STARTUP_IMPORTS}"): {startup_s:.2f} s', flush=True)
    rows = []
    for name in args.models or everything:
      reason = prepare(everything[name], scratch)
      if reason:
        print(f'{name}: skipped, {reason}', flush=True)
        rows.append({'case': name, 'error': f'skipped: {reason}'})
        continue
      rows += measure(everything[name], scratch, args, startup_s)
      print(common.format_table(rows[-2 * len(PLACEMENTS):]), flush=True)
    return rows
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
