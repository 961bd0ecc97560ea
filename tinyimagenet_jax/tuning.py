"""Machine tuning for this process, applied on purpose: `apply()`.

Importing the package changes nothing in the process. The entry points
(launch.py, `python -m tinyimagenet_jax.bench`) call `apply()` first, before
JAX starts its backends; a notebook that wants the same speed calls it once,
before its first JAX computation. Each setting yields to the user's own:

- XLA:CPU flags, added to XLA_FLAGS: YNNPACK for dots, elementwise ops and
  reductions. With the fused max-pool gradient (`models.layers`) it took the
  conv4 train step here from 227 to 393 img/s (issue 7, WORKSPACE.md). They only
  touch the CPU backend and take effect only if JAX has not started its backends
  yet; a flag already in XLA_FLAGS wins; TINYIMAGENET_JAX_XLA_DEFAULTS=0 turns
  them all off. Being in the environment, they reach the interpreters a program
  starts (the scaling benchmark's one per device count).
- glibc's malloc capped at MALLOC_ARENAS arenas (`cap_malloc_arenas`); an
  explicit MALLOC_ARENA_MAX wins.

`use_compilation_cache` is not part of `apply()`: `build.build` calls it, so every
run (a notebook's too) keeps XLA's compiled programs in JAX's persistent
compilation cache and a rerun loads them instead of compiling. The folder is
`config.compilation_cache_dir`, else one the user gave JAX
(JAX_COMPILATION_CACHE_DIR, `jax.config`), else DEFAULT_COMPILATION_CACHE_DIR;
JAX_ENABLE_COMPILATION_CACHE=false turns it off. The cache only reuses XLA's
output for an identical program (and JAX and XLA versions), so results do not
change; the folder can be deleted at any time.

`single_threaded_blas` is the data pipeline's own setting, not part of
`apply()`: `transforms.resize` calls it in each process that resizes, grain's
spawned worker processes included, which no entry point reaches.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys

import threadpoolctl

FAST_CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',)
OPT_OUT = 'TINYIMAGENET_JAX_XLA_DEFAULTS'
DEFAULT_COMPILATION_CACHE_DIR = '~/.cache/tinyimagenet_jax/jax'
# Programs that took at least this long to compile are cached: every one, since loading
# even the smallest beat compiling it. A 1-epoch quickstart with a warm cache took 10.0 s
# of CPU with 0 (22 programs cached), 11.6 s with 0.1 s (15) and 12.6 s with JAX's 1 s (3).
CACHE_MIN_COMPILE_SECONDS = 0.0
JAX_DEFAULT_MIN_COMPILE_SECONDS = 1.0
# glibc mallopt's M_ARENA_MAX, and the arenas kept: per-epoch threads then share them.
M_ARENA_MAX, MALLOC_ARENAS = -8, 2


def flag_name(flag: str) -> str:
  """'--name=value' -> '--name'."""
  return flag.split('=', 1)[0]


def with_fast_cpu_flags(existing: str) -> str:
  """`existing` XLA_FLAGS plus every fast flag whose name it does not already set."""
  names = {flag_name(flag) for flag in existing.split()}
  added = [flag for flag in FAST_CPU_FLAGS if flag_name(flag) not in names]
  return ' '.join(existing.split() + added)


def jax_backends_started() -> bool:
  """Whether JAX has created its backends, which read XLA_FLAGS once (no public API says)."""
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def set_fast_xla_flags() -> bool:
  """Adds the fast flags to XLA_FLAGS; False when opted out or too late to matter."""
  if os.environ.get(OPT_OUT) == '0' or jax_backends_started():
    return False
  os.environ['XLA_FLAGS'] = with_fast_cpu_flags(os.environ.get('XLA_FLAGS', ''))
  return True


def cap_malloc_arenas() -> None:
  """Caps glibc's malloc at MALLOC_ARENAS arenas (as MALLOC_ARENA_MAX=2 would); elsewhere nothing.

  Each epoch's evaluation (grain's reader threads) and checkpoint (Orbax's saver
  threads) run on fresh threads, and glibc gives new threads arenas of their own,
  up to 8 per core, which keep what those threads freed: the resident memory rose
  about 5 MB an epoch while the memory in use stayed flat. An explicit
  MALLOC_ARENA_MAX in the environment is left to rule.
  """
  if 'MALLOC_ARENA_MAX' in os.environ:
    return
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL(ctypes.util.find_library('c')).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


@functools.cache
def single_threaded_blas() -> None:
  """Caps numpy's BLAS at one thread in this process, once.

  Resizing is small matmuls; with BLAS threads each one woke threads that
  fought the train step (and the other pipeline threads) for the cores,
  about 1 s an image measured under a training load.
  """
  threadpoolctl.threadpool_limits(1, user_api='blas')


def use_compilation_cache(directory: str = '') -> None:
  """Turns on JAX's persistent compilation cache (see above), so a rerun loads, not compiles."""
  # pylint: disable=import-outside-toplevel
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  if not jax.config.jax_enable_compilation_cache:
    return
  current = jax.config.jax_compilation_cache_dir
  wanted = os.path.expanduser(directory) if directory else (
      current or os.path.expanduser(DEFAULT_COMPILATION_CACHE_DIR))
  if wanted != current:
    compilation_cache.reset_cache()  # JAX opens its cache folder once, at a first compile
    jax.config.update('jax_compilation_cache_dir', wanted)
  if (jax.config.jax_persistent_cache_min_compile_time_secs == JAX_DEFAULT_MIN_COMPILE_SECONDS
      and 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ):
    jax.config.update('jax_persistent_cache_min_compile_time_secs', CACHE_MIN_COMPILE_SECONDS)


def apply() -> None:
  """Applies the process tuning above: the fast XLA:CPU flags and the malloc arena cap.

  Call it first in a program (or a notebook), before JAX starts its backends.
  """
  set_fast_xla_flags()
  cap_malloc_arenas()
