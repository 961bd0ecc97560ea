"""A runtime whose TPU or GPU JAX cannot see is stopped with one line."""

import pytest

from tinyimagenet_jax import accelerator
from tinyimagenet_jax.errors import ConfigError


@pytest.fixture
def no_tpu_variables(monkeypatch):
  for name in accelerator.TPU_ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize('device_file, machine, extra', [
    ('dev/nvidia0', 'GPU', 'cuda'), ('dev/accel0', 'TPU', 'tpu'), ('dev/vfio/0', 'TPU', 'tpu')])
def test_an_unseen_accelerator_stops_with_one_line(tmp_path, no_tpu_variables, device_file,
                                                   machine, extra):
  (tmp_path / device_file).parent.mkdir(parents=True)
  (tmp_path / device_file).touch()
  with pytest.raises(ConfigError) as error:
    accelerator.check(str(tmp_path))  # the tests' JAX sees the CPU only
  assert str(error.value) == (
      f'this machine has a {machine} but JAX sees only the CPU; install the JAX that drives'
      f" it, pip install -e '.[{extra}]', then restart the runtime.")


def test_colabs_tpu_variable_counts_as_a_tpu(tmp_path, no_tpu_variables, monkeypatch):
  monkeypatch.setenv('COLAB_TPU_ADDR', '10.0.0.2:8470')
  assert accelerator.machine_accelerator(str(tmp_path)) == 'tpu'


def test_a_machine_without_an_accelerator_passes(tmp_path, no_tpu_variables):
  assert accelerator.machine_accelerator(str(tmp_path)) == ''
  assert accelerator.check(str(tmp_path)) == 'cpu'
