"""train_step, eval_step, predict: pure functions of arrays and pytrees.

No axis names and no collectives: the same functions run on one device, or
jitted over a mesh (see `parallel.py`), or called as they are in a notebook.
Randomness is `fold_in(state.rng, state.step)`, so a resumed run repeats it.
"""

import jax
import jax.numpy as jnp
import optax

from tinyimagenet_jax import optim
from tinyimagenet_jax.state import TrainState

TOP_K = 5


def _variables(state: TrainState, params) -> dict:
  """Flax variables for `apply`: params, plus batch stats when the model has them."""
  if state.batch_stats:
    return {'params': params, 'batch_stats': state.batch_stats}
  return {'params': params}


def _apply(state: TrainState, params, images: jax.Array, **kwargs):
  """`apply_fn` computing in `state.compute_dtype`; logits come back as float32.

  For bfloat16, parameters are cast on the way in (gradients flow back to the
  float32 originals); batch-norm statistics stay float32.
  """
  dtype = jnp.dtype(state.compute_dtype)
  if dtype != jnp.float32:
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
                          else p, params)
    images = images.astype(dtype)
  output = state.apply_fn(_variables(state, params), images, **kwargs)
  if isinstance(output, tuple):
    return output[0].astype(jnp.float32), output[1]
  return output.astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against integer labels, optionally smoothed."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def classification_loss(logits: jax.Array, batch: dict, label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy; with mixup/cutmix keys, the weighted mix of both labels.

  A mixed batch carries 'mix_label' (the partner's label) and 'mix_weight'
  (the weight of the original label), so labels stay integers.
  """
  losses = cross_entropy(logits, batch['label'], label_smoothing)
  if 'mix_label' in batch:
    weight = batch['mix_weight']
    partner = cross_entropy(logits, batch['mix_label'], label_smoothing)
    losses = weight * losses + (1 - weight) * partner
  return losses.mean()


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
  """One optimizer step on `batch` ({'image', 'label'}); returns batch metrics.

  Metrics: loss, accuracy, gradient norm, and the learning rate and momentum
  the optimizer used in this step (when it exposes them).
  """
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    logits, updates = _apply(state, params, batch['image'], train=True,
                             rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    return classification_loss(logits, batch, state.label_smoothing), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      opt_state=opt_state,
      batch_stats=updates.get('batch_stats', state.batch_stats),
  )
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'grad_norm': optax.global_norm(grads),
      **optim.current_hyperparams(opt_state),
  }
  return new_state, metrics


def predict(state: TrainState, images: jax.Array) -> jax.Array:
  """Logits in inference mode (dropout off, batch-norm running averages)."""
  return _apply(state, state.params, images, train=False)


def eval_outputs(state: TrainState, batch: dict) -> dict:
  """The evaluator's quantities over the real (mask=True) rows, defined once: each row's
  loss (0 for padding rows: the host sums them exactly, so the mean loss does not depend on
  how the split was cut into batches), the sums of top-1 and top-5 hits, the count; and
  each row's class probabilities."""
  logits = predict(state, batch['image'])
  labels, mask = batch['label'], batch['mask']
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  top_k = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))[1]
  return {
      'losses': jnp.where(mask, losses, 0.0),
      'top1_hits': jnp.sum((top_k[:, 0] == labels) & mask),
      'top5_hits': jnp.sum(jnp.any(top_k == labels[:, None], axis=-1) & mask),
      'count': jnp.sum(mask),
      'probabilities': jax.nn.softmax(logits, axis=-1),
  }


def eval_step(state: TrainState, batch: dict) -> dict:
  """`eval_outputs` without the probabilities: the sums the training loop adds up."""
  outputs = eval_outputs(state, batch)
  del outputs['probabilities']
  return outputs
