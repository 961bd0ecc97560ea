"""Command-line entry point: python launch.py --config=configs/<name>.py.

Config fields can be overridden, e.g. --config.optimizer.learning_rate=0.1.
Mistakes a user can fix (config, data paths) print one line and exit with 2.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/conv4_relu.py.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where metrics, plots and checkpoints go; rerunning resumes.'
    ' Default: runs/<config file name>.')


def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/conv4_relu."""
  return os.path.join('runs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  from tinyimagenet_jax import train  # pylint: disable=g-import-not-at-top
  from tinyimagenet_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  try:
    _, history = train.train_and_evaluate(_CONFIG.value, workdir)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  if history:
    print(f'Finished after {len(history)} epochs; last epoch:'
          f" train error {history[-1]['train_error']:.4f},"
          f" test top-1 {history[-1]['test_top1']:.4f}. Results in {workdir}")


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
