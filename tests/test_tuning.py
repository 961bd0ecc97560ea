"""tuning.apply(): the fast XLA:CPU flags and the malloc arena cap, never over the user's own."""

import os
import subprocess
import sys
from unittest import mock

from tinyimagenet_jax import tuning

YNN = '--xla_cpu_experimental_ynn_fusion_type'


def test_fast_flags_are_added_to_empty_and_unrelated_flags():
  assert tuning.with_fast_cpu_flags('') == ' '.join(tuning.FAST_CPU_FLAGS)
  assert tuning.with_fast_cpu_flags('--xla_dump_to=/tmp/x').split() == [
      '--xla_dump_to=/tmp/x', *tuning.FAST_CPU_FLAGS]


def test_a_flag_the_user_set_wins_and_nothing_is_added_twice():
  own = f'{YNN}=dot'
  assert tuning.with_fast_cpu_flags(own) == own
  once = tuning.with_fast_cpu_flags('')
  assert tuning.with_fast_cpu_flags(once) == once


def run_fresh(code: str, **env: str) -> str:
  """The stdout of `code` in a fresh interpreter without XLA_FLAGS or the opt-out, plus `env`."""
  environment = {key: value for key, value in os.environ.items()
                 if key not in ('XLA_FLAGS', tuning.OPT_OUT)}
  return subprocess.run([sys.executable, '-c', code], env={**environment, **env},
                        capture_output=True, text=True, check=True).stdout.strip()


APPLIED = ('import os; from tinyimagenet_jax import tuning; tuning.apply();'
           ' print(os.environ.get("XLA_FLAGS", ""))')


def test_apply_sets_the_flags_unless_opted_out_or_set_by_the_user():
  assert run_fresh(APPLIED) == ' '.join(tuning.FAST_CPU_FLAGS)
  assert run_fresh(APPLIED, **{tuning.OPT_OUT: '0'}) == ''
  assert run_fresh(APPLIED, XLA_FLAGS=f'{YNN}=dot') == f'{YNN}=dot'


def test_too_late_once_jax_has_started_its_backends():
  code = ('import jax; jax.devices(); from tinyimagenet_jax import tuning;'
          ' print(tuning.set_fast_xla_flags())')
  assert run_fresh(code) == 'False'


def test_malloc_arenas_are_capped_unless_the_environment_sets_them(monkeypatch):
  libc = mock.MagicMock()
  monkeypatch.setattr(tuning.ctypes, 'CDLL', mock.MagicMock(return_value=libc))
  monkeypatch.delenv('MALLOC_ARENA_MAX', raising=False)
  tuning.cap_malloc_arenas()
  libc.mallopt.assert_called_once_with(tuning.M_ARENA_MAX, tuning.MALLOC_ARENAS)
  libc.mallopt.reset_mock()
  monkeypatch.setenv('MALLOC_ARENA_MAX', '8')
  tuning.cap_malloc_arenas()
  libc.mallopt.assert_not_called()


def test_single_threaded_blas_caps_numpys_blas():
  code = ('import numpy, threadpoolctl; from tinyimagenet_jax import tuning;'
          ' tuning.single_threaded_blas(); print({info["num_threads"] for info in'
          ' threadpoolctl.threadpool_info() if info["user_api"] == "blas"})')
  assert run_fresh(code) == '{1}'
