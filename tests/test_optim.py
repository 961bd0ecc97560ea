"""Optimizers, schedules and regularisation against hand-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import optim
from tinyimagenet_jax import validation
from tinyimagenet_jax.errors import ConfigError


def optimizer_config(**fields):
  opt = config_lib.base_config().optimizer
  opt.update(fields)
  return opt


def run(opt, grads: list[np.ndarray], steps_per_epoch: int = 10, num_epochs: int = 1,
        params=None) -> tuple[list[np.ndarray], object]:
  """Parameters after each update of a one-array problem; and the final state."""
  tx = optim.build_optimizer(opt, steps_per_epoch, num_epochs)
  params = jnp.zeros(3) if params is None else jnp.asarray(params)
  state = tx.init(params)
  trace = []
  for grad in grads:
    updates, state = tx.update(jnp.asarray(grad), state, params)
    params = optax.apply_updates(params, updates)
    trace.append(np.asarray(params))
  return trace, state


GRADS = [np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -1.0]), np.array([-1.0, 0.0, 2.0])]


def reference(update_rule, state0, params0=np.zeros(3)) -> list[np.ndarray]:
  """Applies `update_rule(params, grad, state, t) -> (params, state)` to GRADS."""
  params, state, trace = params0.astype(np.float64), state0, []
  for t, grad in enumerate(GRADS, start=1):
    params, state = update_rule(params, grad, state, t)
    trace.append(params)
  return trace


def test_plain_sgd_is_gradient_descent():
  got, _ = run(optimizer_config(learning_rate=0.5), GRADS)
  np.testing.assert_allclose(got, -0.5 * np.cumsum(GRADS, axis=0), rtol=1e-6)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_equals_the_reference(nesterov):
  lr, mu = 0.1, 0.9

  def rule(params, grad, velocity, t):
    velocity = mu * velocity + grad
    step = grad + mu * velocity if nesterov else velocity
    return params - lr * step, velocity

  got, _ = run(optimizer_config(learning_rate=lr, momentum=mu, nesterov=nesterov), GRADS)
  np.testing.assert_allclose(got, reference(rule, np.zeros(3)), rtol=1e-6)


def adam_rule(lr, b1, b2, eps, decoupled_decay=0.0):
  def rule(params, grad, state, t):
    m, v = state
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
    step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + decoupled_decay * params
    return params - lr * step, (m, v)
  return rule


def test_adam_equals_the_reference():
  got, _ = run(optimizer_config(name='adam', learning_rate=1e-3), GRADS)
  expected = reference(adam_rule(1e-3, 0.9, 0.999, 1e-8), (np.zeros(3), np.zeros(3)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_adamw_decays_decoupled():
  params0 = np.array([1.0, -1.0, 2.0])
  got, _ = run(optimizer_config(name='adamw', learning_rate=1e-2, weight_decay=0.1), GRADS,
               params=params0)
  expected = reference(adam_rule(1e-2, 0.9, 0.999, 1e-8, decoupled_decay=0.1),
                       (np.zeros(3), np.zeros(3)), params0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_adadelta_equals_the_reference():
  lr, rho, eps = 1.0, 0.95, 1e-6

  def rule(params, grad, state, t):
    e_g2, e_dx2 = state
    e_g2 = rho * e_g2 + (1 - rho) * grad**2
    delta = np.sqrt(e_dx2 + eps) / np.sqrt(e_g2 + eps) * grad
    e_dx2 = rho * e_dx2 + (1 - rho) * delta**2
    return params - lr * delta, (e_g2, e_dx2)

  got, _ = run(optimizer_config(name='adadelta', learning_rate=lr, rho=rho, eps=eps), GRADS)
  np.testing.assert_allclose(got, reference(rule, (np.zeros(3), np.zeros(3))), rtol=1e-5)


def test_adagrad_equals_the_reference():
  lr, eps = 0.1, 1e-7

  def rule(params, grad, accumulator, t):
    accumulator = accumulator + grad**2
    return params - lr * grad / np.sqrt(accumulator + eps), accumulator

  got, _ = run(optimizer_config(name='adagrad', learning_rate=lr, eps=eps), GRADS)
  np.testing.assert_allclose(got, reference(rule, np.full(3, 0.1)), rtol=1e-5)


def test_rmsprop_equals_the_reference():
  lr, decay, eps = 0.01, 0.9, 1e-8

  def rule(params, grad, mean_square, t):
    mean_square = decay * mean_square + (1 - decay) * grad**2
    return params - lr * grad / (np.sqrt(mean_square) + eps), mean_square

  got, _ = run(optimizer_config(name='rmsprop', learning_rate=lr, eps=eps), GRADS)
  np.testing.assert_allclose(got, reference(rule, np.zeros(3)), rtol=1e-5)


@pytest.mark.parametrize('l1, l2', [(0.0, 0.0), (0.05, 0.0), (0.0, 0.5), (0.3, 0.2)])
def test_proximal_adagrad_equals_tensorflows_formula(l1, l2):
  lr = 0.5
  params0 = np.array([0.2, -0.4, 1.0])

  def rule(params, grad, accumulator, t):
    accumulator = accumulator + grad * grad
    proposal = params - lr * grad / np.sqrt(accumulator)
    shrunk = np.sign(proposal) * np.maximum(np.abs(proposal) - lr * l1, 0) / (1 + lr * l2)
    return shrunk, accumulator

  got, _ = run(optimizer_config(name='proximal_adagrad', learning_rate=lr, proximal_l1=l1,
                                proximal_l2=l2), GRADS, params=params0)
  np.testing.assert_allclose(got, reference(rule, np.full(3, 0.1), params0), rtol=1e-5,
                             atol=1e-7)


def schedule_values(steps_per_epoch: int, num_epochs: int, steps: list[int], **fields):
  schedule = optim.build_schedule(optimizer_config(**fields), steps_per_epoch, num_epochs)
  return [float(schedule(step)) for step in steps]


def test_step_decay_multiplies_every_n_epochs():
  got = schedule_values(100, 50, [0, 999, 1000, 2999, 3000], schedule='step',
                        learning_rate=0.01, decay_rate=0.85, decay_every_epochs=10)
  np.testing.assert_allclose(got, [0.01, 0.01, 0.0085, 0.01 * 0.85**2, 0.01 * 0.85**3],
                             rtol=1e-6)


def test_exponential_decay_is_smooth():
  got = schedule_values(10, 10, [0, 5, 10, 20], schedule='exponential', learning_rate=1.0,
                        decay_rate=0.5, decay_every_epochs=1)
  np.testing.assert_allclose(got, [1.0, 0.5**0.5, 0.5, 0.25], rtol=1e-6)


def test_cosine_warms_up_then_decays_to_the_final_rate():
  got = schedule_values(10, 10, [0, 5, 10, 55, 100], schedule='cosine', learning_rate=0.1,
                        warmup_epochs=1, final_learning_rate=0.001)
  np.testing.assert_allclose(got, [0.0, 0.05, 0.1, 0.001 + 0.099 * 0.5, 0.001], rtol=1e-5)


def onecycle_config():
  """The fourth report's OneCycle: from 2e-4 up to 0.01 (div_factor 50)."""
  return dict(schedule='onecycle', learning_rate=0.01, onecycle_div_factor=50.0,
              onecycle_pct_start=0.3, onecycle_final_div_factor=1e4)


def test_onecycle_starts_peaks_and_ends_where_pytorch_does():
  start, peak, end = schedule_values(10, 10, [0, 30, 100], **onecycle_config())
  assert start == pytest.approx(2e-4, rel=1e-5)
  assert peak == pytest.approx(0.01, rel=1e-5)
  assert end == pytest.approx(2e-4 / 1e4, rel=1e-3)


def test_onecycle_momentum_moves_inversely_to_the_rate():
  opt = optimizer_config(**onecycle_config())
  momentum = optim.momentum_schedule(opt, total_steps=100)
  rate = optim.build_schedule(opt, 10, 10)
  values = [(float(rate(s)), float(momentum(s))) for s in (0, 15, 30, 65, 100)]
  assert [m for _, m in values] == pytest.approx([0.95, 0.90, 0.85, 0.90, 0.95], abs=1e-6)
  rates = [r for r, _ in values]
  assert rates[0] < rates[1] < rates[2] > rates[3] > rates[4]


def test_logged_hyperparams_follow_the_schedules():
  opt = optimizer_config(name='sgd', **onecycle_config())
  _, state = run(opt, GRADS[:1], steps_per_epoch=10, num_epochs=10)
  logged = optim.current_hyperparams(state)
  assert float(logged['learning_rate']) == pytest.approx(2e-4, rel=1e-5)
  assert float(logged['momentum']) == pytest.approx(0.95)
  _, adam_state = run(optimizer_config(name='adam', **onecycle_config()), GRADS[:1], 10, 10)
  assert float(optim.current_hyperparams(adam_state)['momentum']) == pytest.approx(0.95)


def test_clip_by_global_norm_bounds_the_update():
  big = [np.array([30.0, -40.0, 0.0])]  # norm 50
  got, _ = run(optimizer_config(learning_rate=1.0, clip_global_norm=1.0), big)
  np.testing.assert_allclose(np.linalg.norm(got[0]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(got[0], [-0.6, 0.8, 0.0], rtol=1e-6)


def test_clip_by_value_bounds_each_entry():
  got, _ = run(optimizer_config(learning_rate=1.0, clip_value=0.5), GRADS[:1])
  np.testing.assert_allclose(got[0], [-0.5, 0.5, -0.5])


def conv_params():
  return {'Conv_0': {'kernel': jnp.ones((3, 3, 1, 2)), 'bias': jnp.ones(2)},
          'BatchNorm_0': {'scale': jnp.ones(2), 'bias': jnp.ones(2)},
          'Dense_0': {'kernel': jnp.ones((4, 2)), 'bias': jnp.ones(2)}}


def test_l2_touches_kernels_only():
  params = conv_params()
  tx = optim.build_optimizer(optimizer_config(learning_rate=1.0, l2=0.01), 10, 1)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates['Conv_0']['kernel'] + 0.02).max()) < 1e-7  # -lr * 2 * l2 * w
  assert float(jnp.abs(updates['Dense_0']['kernel'] + 0.02).max()) < 1e-7
  for leaf in (updates['Conv_0']['bias'], updates['BatchNorm_0']['scale'],
               updates['BatchNorm_0']['bias'], updates['Dense_0']['bias']):
    assert float(jnp.abs(leaf).max()) == 0.0


def test_l2_gradient_equals_the_loss_term():
  params = conv_params()
  penalty = lambda p: 0.01 * sum(jnp.sum(p[name]['kernel'] ** 2) for name in ('Conv_0', 'Dense_0'))
  expected = jax.grad(penalty)(params)
  tx = optim.build_optimizer(optimizer_config(learning_rate=1.0, l2=0.01), 10, 1)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  jax.tree.map(lambda u, e: np.testing.assert_allclose(-u, e, rtol=1e-6), updates, expected)


def test_weight_decay_is_added_after_clipping_as_pytorch_does():
  params = jnp.array([10.0, 0.0, 0.0])
  tx = optim.build_optimizer(optimizer_config(learning_rate=1.0, weight_decay=0.1,
                                              clip_global_norm=1.0), 10, 1)
  updates, _ = tx.update(jnp.array([0.0, 3.0, 4.0]), tx.init(params), params)
  np.testing.assert_allclose(updates, [-1.0, -0.6, -0.8], rtol=1e-6)


def vgg_like_params():
  """A tiny VGG16-named tree; one frozen entry is -0.0, which p + 0.0 would turn into +0.0."""
  return {'block1_conv1': {'kernel': jnp.array([[1.0, -0.0], [0.5, 2.0]]), 'bias': jnp.ones(2)},
          'block2_conv1': {'kernel': jnp.full((2, 2), -1.5), 'bias': jnp.zeros(2)},
          'predictions': {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)}}


def freeze_trace(steps: int, steps_per_epoch: int, **fields) -> list[dict]:
  """Parameters after each of `steps` jitted updates with random gradients."""
  params = vgg_like_params()
  tx = optim.build_optimizer(optimizer_config(**fields), steps_per_epoch, 10)
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  trace = []
  for key in jax.random.split(jax.random.key(0), steps):
    grads = jax.tree.map(lambda p, k=key: jax.random.normal(k, p.shape), params)
    params, state = step(params, state, grads)
    trace.append(jax.device_get(params))
  return trace


def bitwise_equal(tree, other) -> bool:
  return all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
             for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(other)))


@pytest.mark.parametrize('fields', [
    dict(momentum=0.9, nesterov=True, weight_decay=0.1, l2=0.01),
    dict(name='adamw', weight_decay=0.1),
])
def test_frozen_params_stay_bitwise_unchanged_until_their_epoch(fields):
  initial = vgg_like_params()
  trace = freeze_trace(8, steps_per_epoch=2, learning_rate=0.1,
                       freeze=('block1@inf', 'block2@2'), **fields)
  for params in trace:
    assert bitwise_equal(params['block1_conv1'], initial['block1_conv1'])
  for params in trace[:4]:  # epochs 0 and 1: steps 0-3
    assert bitwise_equal(params['block2_conv1'], initial['block2_conv1'])
  for params in trace[4:]:  # from epoch 2 on (step 4) it trains
    assert not np.any(params['block2_conv1']['kernel'] == trace[3]['block2_conv1']['kernel'])
  assert not np.any(trace[0]['predictions']['kernel'] == initial['predictions']['kernel'])


def test_freeze_counts_its_own_steps_and_keeps_the_logged_hyperparams():
  params = vgg_like_params()
  opt = optimizer_config(learning_rate=0.1, momentum=0.9, freeze=('block2@1',))
  tx = optim.build_optimizer(opt, 3, 10)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
  assert isinstance(state[-1], optim.FreezeState) and int(state[-1].count) == 3
  assert float(jnp.abs(updates['block2_conv1']['kernel']).max()) == 0.0
  updates, state = tx.update(grads, state, params)
  assert float(jnp.abs(updates['block2_conv1']['kernel']).min()) > 0.0
  assert optim.current_hyperparams(state) == {'learning_rate': 0.1, 'momentum': 0.9}


def test_no_freeze_leaves_the_chain_as_it_was():
  params = vgg_like_params()
  opt = optimizer_config(momentum=0.9, weight_decay=0.1)
  core = optim.sgd(opt, optim.build_schedule(opt, 10, 1), None)
  before = optax.chain(*optim.regularisation(opt), core).init(params)
  assert jax.tree.structure(optim.build_optimizer(opt, 10, 1).init(params)) == (
      jax.tree.structure(before))
  opt.freeze = ('block1@inf',)
  frozen = optim.build_optimizer(opt, 10, 1).init(params)
  assert jax.tree.structure(frozen[:-1]) == jax.tree.structure(before)


def test_unknown_freeze_prefix_gives_a_one_line_error():
  tx = optim.build_optimizer(optimizer_config(freeze=('block5@3',)), 10, 1)
  with pytest.raises(ConfigError) as error:
    tx.init(vgg_like_params())
  assert str(error.value) == (
      "config.optimizer.freeze entry 'block5@3' matches no parameter; parameter paths start"
      ' with one of: block1_conv1, block2_conv1, predictions.')


@pytest.mark.parametrize('entry', ['block5', 'block5@x', '@3', 'block5@-1', 'block5@2.5'])
def test_malformed_freeze_entry_is_refused_by_validate(entry):
  config = config_lib.base_config()
  config.optimizer.freeze = ('block4@6', entry)
  with pytest.raises(ConfigError) as error:
    validation.validate(config, num_devices=1)
  assert str(error.value) == (
      f"config.optimizer.freeze entry {entry!r} must be '<param path prefix>@<epoch>' with a"
      " whole number of epochs or inf, e.g. 'block5@3' or 'block1@inf'.")


def test_the_reports_freeze_schedule_is_valid():
  config = config_lib.base_config()
  config.optimizer.freeze = ('block1@inf', 'block2@inf', 'block3@inf', 'block4@6', 'block5@3')
  validation.validate(config, num_devices=1)


def test_epochs_to_steps():
  assert optim.epochs_to_steps(10, 390) == 3900
  assert optim.epochs_to_steps(0.5, 391) == 196
  assert optim.epochs_to_steps(0.001, 10) == 1
