"""train_step, eval_step and the loss against numpy reference computations."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tinyimagenet_jax import models, steps
from tinyimagenet_jax.state import create_train_state


def log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


LOGITS = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 4, 0], np.int32)


def test_loss_is_mean_cross_entropy():
  expected = -log_softmax(LOGITS)[np.arange(6), LABELS].mean()
  got = steps.classification_loss(jnp.asarray(LOGITS), {'label': LABELS})
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_mixed_loss_weights_both_labels():
  partner = LABELS[::-1].copy()
  weight = np.array([1.0, 0.75, 0.5, 0.5, 0.25, 0.0], np.float32)
  log_p = log_softmax(LOGITS)
  expected = -(weight * log_p[np.arange(6), LABELS]
               + (1 - weight) * log_p[np.arange(6), partner]).mean()
  batch = {'label': LABELS, 'mix_label': partner, 'mix_weight': weight}
  np.testing.assert_allclose(steps.classification_loss(jnp.asarray(LOGITS), batch), expected,
                             rtol=1e-6)


def small_state(name: str = 'mlp', **options):
  model = models.build_model(ml_collections.ConfigDict({'name': name, **options}), 5)
  return create_train_state(model, optax.sgd(0.1), seed=0, input_shape=(4, 4, 3))


def test_eval_step_sums_only_masked_rows():
  state = small_state(hidden=(8,))
  images = np.random.default_rng(1).normal(size=(6, 4, 4, 3)).astype(np.float32)
  mask = np.array([True, True, True, True, False, False])
  sums = jax.device_get(steps.eval_step(state, {'image': images, 'label': LABELS, 'mask': mask}))
  logits = np.asarray(steps.predict(state, images))
  ranked = np.argsort(-logits, axis=-1)
  assert sums['count'] == 4
  assert sums['top1_hits'] == int(((ranked[:, 0] == LABELS) & mask).sum())
  assert sums['top5_hits'] == 4  # 5 classes: every label is in the top 5
  expected_losses = -log_softmax(logits)[np.arange(6), LABELS] * mask
  np.testing.assert_allclose(sums['losses'], expected_losses, rtol=1e-5, atol=1e-6)


def test_train_step_is_deterministic_and_dropout_follows_the_step():
  state = small_state(hidden=(64,), dropout=0.5)
  batch = {'image': np.ones((4, 4, 4, 3), np.float32), 'label': LABELS[:4]}
  step = jax.jit(steps.train_step)
  first, metrics = step(state, batch)
  again, metrics_again = step(state, batch)
  assert int(first.step) == 1
  assert float(metrics['loss']) == float(metrics_again['loss'])
  jax.tree.map(np.testing.assert_array_equal, first.params, again.params)
  # The same params at another step draw another dropout mask.
  later = first.replace(params=state.params, opt_state=state.opt_state)
  _, metrics_later = step(later, batch)
  assert float(metrics_later['loss']) != float(metrics['loss'])


def test_label_smoothing_matches_the_smoothed_targets():
  smoothing = 0.1
  targets = np.full((6, 5), smoothing / 5) + (1 - smoothing) * np.eye(5)[LABELS]
  expected = -(targets * log_softmax(LOGITS)).sum(-1).mean()
  got = steps.classification_loss(jnp.asarray(LOGITS), {'label': LABELS}, smoothing)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_close_results():
  model = models.build_model(ml_collections.ConfigDict({'name': 'conv4', 'filters': (8, 8, 8, 8),
                                                        'hidden': 16}), 5)
  full = create_train_state(model, optax.sgd(0.1), 0, (8, 8, 3))
  half = create_train_state(model, optax.sgd(0.1), 0, (8, 8, 3), compute_dtype='bfloat16')
  batch = {'image': np.random.default_rng(2).random((4, 8, 8, 3), dtype=np.float32),
           'label': LABELS[:4]}
  full_next, full_metrics = jax.jit(steps.train_step)(full, batch)
  half_next, half_metrics = jax.jit(steps.train_step)(half, batch)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(half_next.params))
  assert steps.predict(half_next, batch['image']).dtype == jnp.float32
  np.testing.assert_allclose(half_metrics['loss'], full_metrics['loss'], rtol=2e-2)
  assert float(half_metrics['loss']) != float(full_metrics['loss'])
