"""The one exception type for mistakes a user can fix (config, data paths, files)."""


class UserError(Exception):
  """A mistake the user can fix; its message is one sentence that says how.

  `launch.py` prints it on one line and exits with status 2, without a
  traceback; library callers (tests, notebooks) catch it like any exception.
  """


class ConfigError(UserError):
  """A config value that cannot work (unknown name, out-of-range number)."""


class DataError(UserError):
  """Data that cannot be found or read (missing path, offline TFDS, bad file)."""


class NonFiniteLossError(UserError):
  """The loss or gradient norm became NaN or infinite; the message names the step."""


class TrainingInterrupted(Exception):
  """SIGTERM or SIGINT stopped training after a checkpoint was saved; rerun to resume."""

  def __init__(self, signum: int, step: int, workdir: str):
    super().__init__(
        f'stopped by signal {signum} after saving a checkpoint at step {step}; rerun the'
        f' same command to resume from it ({workdir}).')
    self.signum = signum
