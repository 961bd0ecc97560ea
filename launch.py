"""Command-line entry point: python launch.py --config=configs/<name>.py.

Config fields can be overridden, e.g. --config.optimizer.learning_rate=0.1.
Mistakes a user can fix (flags, config file, config values, data) print one line,
`error: <what>; <fix>`, to stderr and exit with status 2, without a traceback.
`run(config, workdir)` is the same entry without flags, for tests and notebooks.
"""

import os
import sys
from typing import NoReturn

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

USAGE_ERROR = 2  # the exit status of every mistake a user can fix
HELP = 'fix the flag or the config file (python launch.py --helpfull lists the flags)'
EXAMPLE_CONFIG = 'configs/quickstart.py'


def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/conv4_relu."""
  return os.path.join('runs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def print_error(message: str) -> None:
  """Prints `error: <message>` as exactly one line to stderr."""
  lines = (line.strip() for line in message.splitlines())
  print('error: ' + ' '.join(line for line in lines if line), file=sys.stderr, flush=True)


def dispatch(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Does what the config asks (an experiment, or one run's train, evaluate or
  predict mode); returns the line to print when it is done."""
  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax import evaluation, experiments, train
  from tinyimagenet_jax.errors import ConfigError

  if config.experiment:
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
          f" {last['train_error']:.4f}, test top-1 {last['test_top1']:.4f}. Results in {workdir}")


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


def summary(error: BaseException) -> str:
  """What `error` says, up to its first blank line (a traceback may follow), for one line.

  An exception wrapping another as its only argument (ml_collections wraps the
  KeyError of an unknown field) is unwrapped, and a KeyError says its argument:
  its str() is the argument's repr.
  """
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  text = text.strip().split('\n\n')[0].rstrip('.:') or type(error).__name__
  return text if isinstance(error, flags.Error) else f'{type(error).__name__}: {text}'


def fail(message: str) -> NoReturn:
  """Prints `message` as one `error:` line and exits with status 2."""
  print_error(message)
  sys.exit(USAGE_ERROR)


def config_file_argument(argv: list[str]) -> str:
  """The file --config names in `argv` ('' if none), found by absl's parser knowing only
  that flag: the real --config flag loads the file while it parses."""
  only_config = flags.FlagValues()
  flags.DEFINE_string('config', '', 'Experiment config file.', flag_values=only_config)
  only_config(argv, known_only=True)
  return only_config.config.split(':', 1)[0]


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, each mistake told in one line with status 2; --help still works."""
  try:
    config_file = config_file_argument(argv)
    if config_file and not os.path.isfile(config_file):
      fail(f'config file {config_file!r} does not exist; pass an experiment file,'
           f' e.g. --config={EXAMPLE_CONFIG}.')
    rest = flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
    # absl raises its flags.Error for a flag it does not know or a value it cannot
    # parse, ml_collections a KeyError for an override naming no field, and the
    # config file is user code: anything can go wrong in it. --help and fail()
    # raise SystemExit, which this lets through.
    fail(f'{summary(error)}; {HELP}.')
  if not config_file:
    fail(f'--config is required; pass an experiment file, e.g. --config={EXAMPLE_CONFIG}.')
  if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
    fail(f'config file {config_file!r} gives no config; its get_config() must return a'
         f' ConfigDict, as in {EXAMPLE_CONFIG}.')
  if len(rest) > 1:
    fail(f'unexpected arguments {" ".join(rest[1:])!r}; pass everything as --name=value'
         ' flags.')
  return rest


def main(argv: list[str]) -> None:
  del argv  # parse_flags refused any positional argument
  from tinyimagenet_jax import tuning  # pylint: disable=g-import-not-at-top
  tuning.apply()  # before anything starts JAX's backends
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  workdir = flags.FLAGS.workdir or default_workdir(flags.FLAGS['config'].config_filename)
  sys.exit(run(flags.FLAGS.config, workdir))


if __name__ == '__main__':
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, e.g. configs/conv4_relu.py.', lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Where metrics, plots and checkpoints go; rerunning resumes.'
      ' Default: runs/<config file name>.')
  app.run(main, flags_parser=parse_flags)
