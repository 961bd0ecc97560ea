"""Whether JAX sees the accelerator the machine has: on Colab, installing a JAX without the
matching TPU or CUDA plugin leaves JAX on the CPU, silently, and every run many times
slower. `check()` stops a notebook's first cell with one line in that case.
"""

import os
import pathlib

import jax

from tinyimagenet_jax.errors import ConfigError

# Where a machine shows its accelerator without any framework's help.
TPU_SIGNS = ('/dev/accel0', '/dev/vfio/0')
TPU_ENVIRONMENT = ('TPU_ACCELERATOR_TYPE', 'COLAB_TPU_ADDR', 'TPU_NAME')
GPU_SIGNS = ('/dev/nvidia0',)
EXTRAS = {'tpu': 'tpu', 'gpu': 'cuda'}


def machine_accelerator(root: str = '/') -> str:
  """'tpu' or 'gpu' when the machine has one (device files, Colab's TPU variables), else ''."""
  def present(path: str) -> bool:
    return pathlib.Path(root, path.lstrip('/')).exists()

  if any(map(present, TPU_SIGNS)) or any(os.environ.get(name) for name in TPU_ENVIRONMENT):
    return 'tpu'
  return 'gpu' if any(map(present, GPU_SIGNS)) else ''


def check(root: str = '/') -> str:
  """JAX's backend; a ConfigError in one line when the machine has a TPU or GPU and JAX
  sees only the CPU."""
  backend, machine = jax.default_backend(), machine_accelerator(root)
  if backend == 'cpu' and machine:
    raise ConfigError(
        f'this machine has a {machine.upper()} but JAX sees only the CPU; install the JAX'
        f" that drives it, pip install -e '.[{EXTRAS[machine]}]', then restart the runtime.")
  return backend
