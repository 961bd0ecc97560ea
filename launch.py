"""Command-line entry point: python launch.py --config=configs/<name>.py.

Config fields can be overridden, e.g. --config.optimizer.learning_rate=0.1.
Mistakes a user can fix (flags, config file, config values, data) print one line,
`error: <what>; <fix>`, to stderr and exit with status 2, without a traceback.
`run(config, workdir)` is the same entry without flags, for tests and notebooks.
"""

import os
import re
import sys
import traceback
from typing import NoReturn

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

USAGE_ERROR = 2  # the exit status of every mistake a user can fix
HELP = 'see the flags with python launch.py --helpfull'
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


def config_argument(argv: list[str]) -> str | None:
  """The value of --config in `argv` (the file, without a ':' argument), if given."""
  for index, arg in enumerate(argv):
    match = re.fullmatch(r'--?config(?:=(.*))?', arg)
    if match:
      value = match.group(1) if match.group(1) is not None else (argv[index + 1:] or [''])[0]
      return value.split(':', 1)[0]
  return None


def _innermost(error: BaseException) -> BaseException:
  """The first exception of the chain that led to `error` (causes and contexts)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  return error


def _raised_in(error: BaseException, path: str) -> bool:
  """Whether `error` was raised while running (or compiling) the file at `path`."""
  files = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
  if isinstance(error, SyntaxError):
    files.append(error.filename or '')
  return any(f and os.path.abspath(f) == os.path.abspath(path) for f in files)


def _first_line(error: BaseException) -> str:
  """`error`'s message up to its first line break, without a trailing period."""
  return (str(error).strip().splitlines() or [''])[0].rstrip('.')


def _unknown_field_message(error: BaseException, argv: list[str]) -> str:
  """An override naming no config field, with ml_collections' did-you-mean hint."""
  hint = re.search(r'Did you mean "[^"]+" instead of "([^"]+)"\?', str(error))
  missing = hint.group(1) if hint else re.sub(r"^'|'$", '', _first_line(_innermost(error)))
  overrides = [a.split('=', 1)[0].lstrip('-') for a in argv if re.match(r'--?(no)?config\.', a)]
  named = [o for o in overrides if missing in o.split('.')[1:]]
  what = f'--{named[0]} names no config field' if named else f'no config field is named {missing!r}'
  return (what + (f' ({hint.group(0)})' if hint else '')
          + '; fix the name (the config file and tinyimagenet_jax/config.py list the fields).')


def _bad_value_message(error: flags.IllegalFlagValueError) -> str:
  """A flag value its parser refuses, e.g. --config.batch_size=abc."""
  match = re.match(r'flag --([^=]+)=(.*?): ', _first_line(error))
  if not match or match.group(1) not in flags.FLAGS:
    return f'{_first_line(error)}; {HELP}.'
  name, value = match.groups()
  flag = flags.FLAGS[name]
  kind = flag.parser.flag_type()
  root = _innermost(error)
  reason = str(root.args[0]) if root.args else type(root).__name__
  article = 'an' if kind[0] in 'aeiou' else 'a'
  return (f'--{name}={value} is not {article} {kind} ({reason}); pass {article} {kind},'
          f' e.g. the value in the config file: --{name}={flag.default}.')


def _missing_config_message(config_file: str | None) -> str | None:
  """The error for a --config file that does not exist, or None if it does (or none is given)."""
  if config_file is None or os.path.isfile(config_file):
    return None
  return (f'config file {config_file!r} does not exist; pass an experiment file,'
          f' e.g. --config={EXAMPLE_CONFIG}.')


def _not_a_config_message(config_file: str | None) -> str:
  """The error for a --config file whose get_config() returns no ConfigDict."""
  return (f'config file {config_file!r} gives no config; its get_config() must return a'
          f' ConfigDict, as in {EXAMPLE_CONFIG}.')


def flag_error_message(error: Exception, argv: list[str]) -> str:
  """One line, '<what>; <fix>', for anything that went wrong parsing `argv`."""
  config_file = config_argument(argv)
  root = _innermost(error)
  if missing := _missing_config_message(config_file):
    return missing
  if config_file and _raised_in(root, config_file):
    return (f'config file {config_file!r} failed to load ({type(root).__name__}:'
            f' {_first_line(root)}); fix the file.')
  if isinstance(error, flags.UnrecognizedFlagError):
    hint = re.search(r'Did you mean: (.*) \?', str(error))
    suggestion = f' (did you mean --{hint.group(1)}?)' if hint else ''
    return f'unknown flag --{error.flagname}{suggestion}; {HELP}.'
  if isinstance(error, (KeyError, AttributeError)):
    return _unknown_field_message(error, argv)
  if isinstance(error, flags.IllegalFlagValueError):
    if re.match(r'flag --config=None:', str(error)):
      return (_not_a_config_message(config_file) if config_file else
              f'--config is required; pass an experiment file, e.g. --config={EXAMPLE_CONFIG}.')
    return _bad_value_message(error)
  return f'{_first_line(error)}; {HELP}.'


def fail(message: str) -> NoReturn:
  """Prints `message` as one `error:` line and exits with status 2."""
  print_error(message)
  sys.exit(USAGE_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, each mistake told in one line with status 2; --help still works."""
  try:
    rest = flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
    # The config file is user code, so anything can go wrong in it: all of it
    # is a mistake to tell in one line. --help exits with SystemExit, not this.
    fail(flag_error_message(error, argv))
  if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
    config_file = config_argument(argv)
    fail(_missing_config_message(config_file) or _not_a_config_message(config_file))
  if len(rest) > 1:
    fail(f'unexpected arguments {" ".join(rest[1:])!r}; pass everything as --name=value'
         f' flags ({HELP}).')
  return rest


def main(argv: list[str]) -> None:
  del argv  # parse_flags refused any positional argument
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
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)
