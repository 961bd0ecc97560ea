"""The fast XLA:CPU defaults: added once, never over a user's own setting, opt-out works."""

import os
import subprocess
import sys

from tinyimagenet_jax import xla_cpu

YNN = '--xla_cpu_experimental_ynn_fusion_type'


def test_fast_flags_are_added_to_empty_and_unrelated_flags():
  assert xla_cpu.with_fast_cpu_flags('') == ' '.join(xla_cpu.FAST_CPU_FLAGS)
  assert xla_cpu.with_fast_cpu_flags('--xla_dump_to=/tmp/x').split() == [
      '--xla_dump_to=/tmp/x', *xla_cpu.FAST_CPU_FLAGS]


def test_a_flag_the_user_set_wins_and_nothing_is_added_twice():
  own = f'{YNN}=dot'
  assert xla_cpu.with_fast_cpu_flags(own) == own
  once = xla_cpu.with_fast_cpu_flags('')
  assert xla_cpu.with_fast_cpu_flags(once) == once


def xla_flags_after_import(**env: str) -> str:
  """XLA_FLAGS as a fresh interpreter sees it after importing the package."""
  environment = {key: value for key, value in os.environ.items()
                 if key not in ('XLA_FLAGS', xla_cpu.OPT_OUT)}
  code = 'import os, tinyimagenet_jax; print(os.environ.get("XLA_FLAGS", ""))'
  return subprocess.run([sys.executable, '-c', code], env={**environment, **env},
                        capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_package_sets_the_flags_unless_opted_out():
  assert xla_flags_after_import() == ' '.join(xla_cpu.FAST_CPU_FLAGS)
  assert xla_flags_after_import(**{xla_cpu.OPT_OUT: '0'}) == ''


def test_too_late_once_jax_has_started_its_backends():
  code = ('import os, jax; jax.devices(); from tinyimagenet_jax import xla_cpu;'
          ' print(xla_cpu.apply_defaults())')
  environment = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}
  result = subprocess.run([sys.executable, '-c', code], env=environment,
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == 'False'
