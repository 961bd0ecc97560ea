"""Shared fixtures: parsed absl flags, the real data in ../shared/data, tiny configs."""

import os
import pathlib
import shutil
import subprocess
import tarfile

from absl import flags
import filelock
import jax
import pytest

from tinyimagenet_jax import tuning

from digits_config import make_digits_config
from helpers import shared_archive

# The suite runs with the CPU tuning launch.py applies (before any test starts JAX), and
# with parsed absl flags, which grain's worker processes read.
tuning.apply()
flags.FLAGS.mark_as_parsed()

# Set to 0 to compile every program afresh, as before the session cache existed.
COMPILE_CACHE_OPT_OUT = 'TINYIMAGENET_JAX_TEST_COMPILE_CACHE'


# JAX locks its cache folder (with filelock) only when the cache has a size limit; the
# suite's test workers (pytest-xdist) share one folder, so it gets a limit no run reaches.
COMPILE_CACHE_MAX_BYTES = 64 * 2**30


def shared_temp_folder(factory) -> pathlib.Path:
  """The session's base temp folder that every test worker (pytest-xdist) shares: a
  worker's own base temp is a folder inside it."""
  base = factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def session_cache_folder(factory) -> pathlib.Path:
  """The session's compilation cache folder, shared by its workers."""
  path = shared_temp_folder(factory) / 'jax_compile_cache'
  path.mkdir(exist_ok=True)
  return path


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin has made its factory
def pytest_configure(config):
  """One JAX compilation cache per test session, shared by its workers.

  Most tests train the same few small programs (digits_config's conv4, the
  quickstart) in fresh processes or with freshly built jitted steps, and on a
  2-core CPU compiling them costs far more than running them: with the cache each
  distinct program compiles once per session and later runs load it. The cache
  only reuses XLA's output for an identical program, so every run computes what it
  did without it. It is set before anything compiles (JAX reads the directory
  once, at its first compile) and through the environment for launch.py and the
  other fresh interpreters the tests start.
  """
  if os.environ.get(COMPILE_CACHE_OPT_OUT) == '0':
    return
  factory = getattr(config, '_tmp_path_factory', None)
  if factory is None:
    return
  path = str(session_cache_folder(factory))
  os.environ['JAX_COMPILATION_CACHE_DIR'] = path
  os.environ['JAX_COMPILATION_CACHE_MAX_SIZE'] = str(COMPILE_CACHE_MAX_BYTES)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_compilation_cache_max_size', COMPILE_CACHE_MAX_BYTES)


def extract(name: str, tmp_path_factory) -> pathlib.Path:
  """Unpacks ../shared/data/<name> once per session into a folder every test worker shares
  (skips if absent); a worker that finds it unpacked, or being unpacked, waits and reuses it."""
  archive = shared_archive(name)
  target = shared_temp_folder(tmp_path_factory) / f"shared_{name.split('.')[0]}"
  done = target.with_suffix('.done')
  with filelock.FileLock(str(target.with_suffix('.lock'))):
    if not done.exists():
      shutil.rmtree(target, ignore_errors=True)  # what a killed session left half unpacked
      target.mkdir()
      if shutil.which('tar'):  # GNU tar unpacks in a quarter of tarfile's time
        subprocess.run(['tar', 'xzf', str(archive), '-C', str(target)], check=True)
      else:
        with tarfile.open(archive) as tar:
          tar.extractall(target, filter='data')
      done.touch()
  return target


@pytest.fixture(scope='session')
def cifar10_folder(tmp_path_factory) -> pathlib.Path:
  """All 60,000 real CIFAR-10 JPEGs as <root>/{train,test}/<class>/*.jpg."""
  return extract('cifar-10-images-jpg.tgz', tmp_path_factory) / 'cifar-10-images-jpg'


@pytest.fixture(scope='session')
def tiny_root(tmp_path_factory) -> pathlib.Path:
  """The real Tiny ImageNet archive, extracted once per session: the tiny-imagenet-200 folder."""
  return extract('tiny-imagenet-200.tgz', tmp_path_factory) / 'tiny-imagenet-200'


@pytest.fixture
def digits_config():
  """make_digits_config(), the test's own to change."""
  return make_digits_config()


@pytest.fixture(scope='session')
def digits_run(tmp_path_factory):
  """make_digits_config() trained once a session, for the tests that only read such a run:
  (workdir, final state, history). A test that writes into a run works on a copy of it."""
  from tinyimagenet_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('digits_run')
  state, history = train.train_and_evaluate(make_digits_config(), str(workdir))
  return workdir, state, history
