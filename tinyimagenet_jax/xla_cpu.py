"""Faster XLA:CPU defaults, set in XLA_FLAGS when the package is imported.

YNNPACK for dots, elementwise ops and reductions: with the fused max-pool
gradient (`models.layers`) it took the conv4 train step here from 227 to 393
img/s (issue 7, WORKSPACE.md). The flags only touch the CPU backend. They take
effect only if JAX has not started its backends yet; a flag the user already
set in XLA_FLAGS wins; TINYIMAGENET_JAX_XLA_DEFAULTS=0 turns them all off.
"""

import os

FAST_CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',)
OPT_OUT = 'TINYIMAGENET_JAX_XLA_DEFAULTS'


def flag_name(flag: str) -> str:
  """'--name=value' -> '--name'."""
  return flag.split('=', 1)[0]


def with_fast_cpu_flags(existing: str) -> str:
  """`existing` XLA_FLAGS plus every fast flag whose name it does not already set."""
  names = {flag_name(flag) for flag in existing.split()}
  added = [flag for flag in FAST_CPU_FLAGS if flag_name(flag) not in names]
  return ' '.join(existing.split() + added)


def apply_defaults() -> bool:
  """Sets the fast flags in XLA_FLAGS; False when opted out or too late to matter."""
  if os.environ.get(OPT_OUT) == '0':
    return False
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  if xla_bridge.backends_are_initialized():
    return False
  os.environ['XLA_FLAGS'] = with_fast_cpu_flags(os.environ.get('XLA_FLAGS', ''))
  return True
