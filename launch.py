"""Command-line entry point: python launch.py --config=configs/<name>.py.

Config fields can be overridden, e.g. --config.optimizer.learning_rate=0.1.
Mistakes a user can fix (flags, config file, config values, data) print one line,
`error: <what>; <fix>`, to stderr and exit with status 2, without a traceback.
`run(config, workdir)` is the same entry without flags, for tests and notebooks.
"""

import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from tinyimagenet_jax import cli
from tinyimagenet_jax.cli import fail, print_error, USAGE_ERROR

HELP = 'fix the flag or the config file (python launch.py --help lists the flags and fields)'
EXAMPLE_CONFIG = 'configs/quickstart.py'


def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/conv4_relu."""
  return os.path.join('runs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def dispatch(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Does what the config asks (an experiment, or one run's train, evaluate or
  predict mode); returns the line to print when it is done."""
  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax import evaluation, train
  from tinyimagenet_jax.errors import ConfigError

  if config.experiment:
    from tinyimagenet_jax import experiments  # their modules and plots: only when asked for
    if config.experiment not in experiments.EXPERIMENTS:
      raise ConfigError(f'config.experiment={config.experiment!r} is not a valid choice;'
                        f' choose one of: {", ".join(sorted(experiments.EXPERIMENTS))}')
    result = experiments.EXPERIMENTS[config.experiment](config, workdir)
    files = result.get('files', []) if isinstance(result, dict) else []
    return (f'Experiment {config.experiment} done; wrote ' + ', '.join(
        os.path.relpath(f, workdir) for f in files) + f' in {workdir}') if files else (
            f'Experiment {config.experiment} done; results in {workdir}')
  if config.mode == 'evaluate':
    result = evaluation.evaluate_saved(config, workdir)
    return (f"Evaluated {workdir} on {result['split']} ({result['count']} images): top-1"
            f" {result['top1']:.4f}, top-5 {result['top5']:.4f}, macro F1"
            f" {result['macro_f1']:.4f}.")
  if config.mode == 'predict':
    return f'Predictions written to {evaluation.write_predictions(config, workdir)}'
  _, history = train.train_and_evaluate(config, workdir)
  if not history:
    return f'Nothing trained; results in {workdir}'
  last = history[-1]
  return (f'Finished after {len(history)} epochs; last epoch: train error'
          f" {last['train_error']:.4f}, {config.data.eval_split} top-1"
          f" {last[f'{config.data.eval_split}_top1']:.4f}. Results in {workdir}")


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
  """Runs what the config asks; returns 0, 2 after printing a UserError as one line,
  or 128 + the signal number when SIGTERM/SIGINT stopped a run after a checkpoint."""
  from tinyimagenet_jax.errors import TrainingInterrupted, UserError  # pylint: disable=g-import-not-at-top

  try:
    done = dispatch(config, workdir)
  except UserError as error:
    message = str(error)
    # grain keeps an error raised in its threads; dropping the traceback frees the
    # loop's frames now, so an open progress bar redraws itself before the message.
    error.__traceback__ = None
  except TrainingInterrupted as interrupted:
    print(str(interrupted), file=sys.stderr, flush=True)
    return 128 + interrupted.signum
  else:
    message = None
  if message is not None:
    print_error(message)
    return USAGE_ERROR
  print(done)
  return 0


def config_file_argument(argv: list[str]) -> str:
  """The file --config names in `argv` ('' if none), found by absl's parser knowing only
  that flag: the real --config flag loads the file while it parses."""
  only_config = flags.FlagValues()
  flags.DEFINE_string('config', '', 'Experiment config file.', flag_values=only_config)
  only_config(argv, known_only=True)
  return only_config.config.split(':', 1)[0]


COMMAND_FLAGS = ('config', 'workdir', 'distributed', 'coordinator_address', 'num_processes',
                 'process_id')


def print_help(argv: list[str]) -> None:
  """The help text (tinyimagenet_jax.config_help): configs, flags, and the fields of the
  --config given (with its overrides), else the defaults."""
  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax import build, config_help
  config, name = None, config_file_argument([arg for arg in argv if arg not in cli.HELP_FLAGS])
  if name:
    spec = next(arg for arg in argv if arg.startswith('--config=')).split('=', 1)[1]
    config = build.load_config(spec)
    config.update_from_flattened_dict({
        key[len('--config.'):]: config_help.parse_value(value)
        for key, value in (arg.split('=', 1) for arg in argv
                           if arg.startswith('--config.') and '=' in arg)})
  flag_lines = [f'  --{flag}: {flags.FLAGS[flag].help}' for flag in COMMAND_FLAGS]
  print(config_help.help_text('python launch.py', flag_lines,
                              pathlib.Path(__file__).parent / 'configs', config, name))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, each mistake told in one line with status 2; --help prints the
  configs and every config field, and exits 0."""
  if any(arg in cli.HELP_FLAGS for arg in argv[1:]):
    try:
      print_help(argv)
    except Exception as error:  # pylint: disable=broad-except
      fail(f'{cli.summary(error)}; {HELP}.')
    sys.exit(0)
  try:
    config_file = config_file_argument(argv)
  except flags.Error as error:
    fail(f'{cli.summary(error)}; {HELP}.')
  if config_file and not os.path.isfile(config_file):
    fail(f'config file {config_file!r} does not exist; pass an experiment file,'
         f' e.g. --config={EXAMPLE_CONFIG}.')
  rest = cli.parse_flags(argv, HELP)
  if not config_file:
    fail(f'--config is required; pass an experiment file, e.g. --config={EXAMPLE_CONFIG}.')
  if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
    fail(f'config file {config_file!r} gives no config; its get_config() must return a'
         f' ConfigDict, as in {EXAMPLE_CONFIG}.')
  return rest


def start_distributed() -> None:
  """Starts JAX's distributed runtime when the flags or the environment ask for it:
  --coordinator_address (or JAX_COORDINATOR_ADDRESS) with --num_processes and
  --process_id, or --distributed to take all three from the cluster (Cloud TPU pod
  slices, SLURM, Open MPI, Kubernetes). Every process runs the same command."""
  address = flags.FLAGS.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if not (address or flags.FLAGS.distributed):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(address, flags.FLAGS.num_processes, flags.FLAGS.process_id)


def main(argv: list[str]) -> None:
  del argv  # parse_flags refused any positional argument
  from tinyimagenet_jax import tuning  # pylint: disable=g-import-not-at-top
  tuning.apply()  # before anything starts JAX's backends
  start_distributed()
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  workdir = flags.FLAGS.workdir or default_workdir(flags.FLAGS['config'].config_filename)
  cli.exit_without_teardown(run(flags.FLAGS.config, workdir))


if __name__ == '__main__':
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, e.g. configs/conv4_relu.py.', lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Where metrics, plots and checkpoints go; rerunning resumes.'
      ' Default: runs/<config file name>.')
  flags.DEFINE_bool(
      'distributed', False, "A multi-process run: start JAX's distributed runtime from what"
      ' the cluster provides (Cloud TPU pod slice, SLURM, Open MPI, Kubernetes).')
  flags.DEFINE_string(
      'coordinator_address', None, 'A multi-process run started by hand: host:port of'
      ' process 0, with --num_processes and --process_id (JAX_COORDINATOR_ADDRESS works too).')
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, "This process's index in a multi-process run.")
  app.run(main, flags_parser=parse_flags)
