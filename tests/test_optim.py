"""Optimizers and schedules equal hand-written references on a small problem."""

import jax.numpy as jnp
import numpy as np
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import optim


def optimizer_config(**fields):
  opt = config_lib.base_config().optimizer
  opt.update(fields)
  return opt


def run(opt, steps_per_epoch: int, grads: list[np.ndarray]) -> list[np.ndarray]:
  """Parameters after each update of a one-array problem from zero."""
  tx = optim.build_optimizer(opt, steps_per_epoch)
  params = jnp.zeros(3)
  state = tx.init(params)
  trace = []
  for grad in grads:
    updates, state = tx.update(jnp.asarray(grad), state, params)
    params = params + updates
    trace.append(np.asarray(params))
  return trace


GRADS = [np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -1.0]), np.array([-1.0, 0.0, 2.0])]


def test_step_decay_multiplies_every_n_epochs():
  schedule = optim.build_schedule(
      optimizer_config(schedule='step', learning_rate=0.01, decay_rate=0.85,
                       decay_every_epochs=10), steps_per_epoch=100)
  for step, expected in [(0, 0.01), (999, 0.01), (1000, 0.0085), (2999, 0.01 * 0.85**2),
                         (3000, 0.01 * 0.85**3)]:
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_constant_schedule():
  schedule = optim.build_schedule(optimizer_config(learning_rate=0.2), steps_per_epoch=7)
  assert float(schedule(0)) == float(schedule(10_000)) == pytest.approx(0.2)


def test_sgd_nesterov_equals_the_reference_update():
  lr, mu = 0.1, 0.9
  params, velocity, expected = np.zeros(3), np.zeros(3), []
  for grad in GRADS:
    velocity = mu * velocity + grad
    params = params - lr * (grad + mu * velocity)
    expected.append(params)
  got = run(optimizer_config(learning_rate=lr, momentum=mu, nesterov=True), 10, GRADS)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_plain_sgd_is_gradient_descent():
  got = run(optimizer_config(learning_rate=0.5), 10, GRADS)
  np.testing.assert_allclose(got, -0.5 * np.cumsum(GRADS, axis=0), rtol=1e-6)


def test_adam_equals_the_reference_update():
  lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
  params, m, v, expected = np.zeros(3), np.zeros(3), np.zeros(3), []
  for t, grad in enumerate(GRADS, start=1):
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
    params = params - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    expected.append(params)
  got = run(optimizer_config(name='adam', learning_rate=lr), 10, GRADS)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
