"""Exact t-SNE in JAX, to show latent features in 2-D (the second report's Figures 14-16).

Follows van der Maaten's reference implementation (tsne.py): a per-point
binary search of the Gaussian precision to the target perplexity, P
symmetrised and normalised, early exaggeration (P x 4 for the first 100
steps), and gradient descent with momentum (0.5 for 20 steps, then 0.8),
learning rate 500 and per-coordinate gains. Features wider than 50 are first
projected on their top 50 principal components. Exact means O(N^2) memory and
time per step: fine for a few thousand points.

Kept instead of scikit-learn's TSNE because at the report's 1,000 points it is
faster than its Barnes-Hut (and ~10x faster than its exact) method with as low a
KL divergence and the same trustworthiness (tests/test_analysis.py holds it to
that; WORKSPACE.md has the measurements). From ~2,000 points Barnes-Hut is faster.
"""

import functools

import jax
import jax.numpy as jnp
from matplotlib import colormaps
from matplotlib.figure import Figure
import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax import programs

PCA_DIMS = 50
SEARCH_STEPS = 100  # binary-search halvings of the bandwidth; converged long before
EXAGGERATION = 4.0
EXAGGERATION_STEPS = 100
MOMENTUM_SWITCH_STEP = 20
INITIAL_MOMENTUM, FINAL_MOMENTUM = 0.5, 0.8
LEARNING_RATE = 500.0
MIN_GAIN = 0.01
INITIAL_STD = 1e-2  # N(0, 1e-4 I), the paper's initial solution
TINY = 1e-12


def pca(features: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
  """(N, min(D, dims)) centred features projected on their top principal components."""
  features = np.asarray(features, np.float64)
  centred = features - features.mean(axis=0)
  if features.shape[1] <= dims:
    return centred
  _, _, components = np.linalg.svd(centred, full_matrices=False)
  return centred @ components[:dims].T


def squared_distances(points: jnp.ndarray) -> jnp.ndarray:
  """(N, N) squared Euclidean distances between rows, clipped at 0."""
  norms = jnp.sum(points ** 2, axis=1)
  return jnp.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0.0)


def gaussian_rows(distances: jnp.ndarray, beta: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Row-normalised exp(-beta_i d_ij) without self (j != i), and each row's entropy (nats).

  Distances are shifted by each row's smallest off-diagonal one, which leaves
  the result unchanged but keeps the largest term at exp(0) = 1.
  """
  off_diagonal = ~jnp.eye(distances.shape[0], dtype=bool)
  shifted = distances - jnp.min(jnp.where(off_diagonal, distances, jnp.inf), axis=1,
                                keepdims=True)
  weights = jnp.where(off_diagonal, jnp.exp(-shifted * beta[:, None]), 0.0)
  total = jnp.sum(weights, axis=1)
  entropy = jnp.log(total) + beta * jnp.sum(shifted * weights, axis=1) / total
  return weights / total[:, None], entropy


@functools.partial(jax.jit, static_argnames=('steps',))
def conditional_probabilities(distances: jnp.ndarray, perplexity: float,
                              steps: int = SEARCH_STEPS) -> jnp.ndarray:
  """(N, N) rows p_{j|i} whose entropy is log(perplexity), by binary search on each precision.

  All rows are searched at once for a fixed number of steps: double (or halve)
  beta until the target is bracketed, then bisect, as the reference's x2p.
  """
  target = jnp.log(perplexity)
  count = distances.shape[0]

  def search_step(_, bounds):
    beta, low, high = bounds
    too_flat = gaussian_rows(distances, beta)[1] > target  # entropy too high: sharpen
    low = jnp.where(too_flat, beta, low)
    high = jnp.where(too_flat, high, beta)
    beta = jnp.where(too_flat, jnp.where(jnp.isinf(high), beta * 2, (beta + high) / 2),
                     (beta + low) / 2)  # low is 0 until bracketed: then this halves beta
    return beta, low, high

  beta, _, _ = jax.lax.fori_loop(
      0, steps, search_step, (jnp.ones(count), jnp.zeros(count), jnp.full(count, jnp.inf)))
  return gaussian_rows(distances, beta)[0]


def joint_probabilities(features: np.ndarray, perplexity: float) -> jnp.ndarray:
  """(N, N) symmetrised P = (P_cond + P_cond^T) / sum, from features' squared distances."""
  conditional = conditional_probabilities(squared_distances(jnp.asarray(features, jnp.float32)),
                                          perplexity)
  joint = conditional + conditional.T
  return joint / jnp.sum(joint)


def kl_gradient(joint: jnp.ndarray, embedding: jnp.ndarray) -> jnp.ndarray:
  """The reference's gradient of KL(P || Q) in the embedding (its factor 4 is left out)."""
  kernel = 1.0 / (1.0 + squared_distances(embedding))
  kernel = kernel * (1.0 - jnp.eye(embedding.shape[0], dtype=kernel.dtype))
  q = jnp.maximum(kernel / jnp.sum(kernel), TINY)
  weights = (joint - q) * kernel
  return jnp.sum(weights, axis=1, keepdims=True) * embedding - weights @ embedding


@functools.partial(jax.jit, static_argnames=('steps',))
def optimise_embedding(joint: jnp.ndarray, initial: jnp.ndarray, steps: int) -> jnp.ndarray:
  """Gradient descent with momentum and gains on KL(P || Q), P exaggerated early; centred."""

  def step(index, state):
    embedding, velocity, gains = state
    exaggeration = jnp.where(index < EXAGGERATION_STEPS, EXAGGERATION, 1.0)
    gradient = kl_gradient(jnp.maximum(joint * exaggeration, TINY), embedding)
    same_sign = (gradient > 0) == (velocity > 0)
    gains = jnp.maximum(jnp.where(same_sign, gains * 0.8, gains + 0.2), MIN_GAIN)
    momentum = jnp.where(index < MOMENTUM_SWITCH_STEP, INITIAL_MOMENTUM, FINAL_MOMENTUM)
    velocity = momentum * velocity - LEARNING_RATE * gains * gradient
    embedding = embedding + velocity
    return embedding - jnp.mean(embedding, axis=0), velocity, gains

  state = (initial, jnp.zeros_like(initial), jnp.ones_like(initial))
  return jax.lax.fori_loop(0, steps, step, state)[0]


def embedding_of(features: jnp.ndarray, perplexity: jnp.ndarray, seed: jnp.ndarray,
                 steps: int) -> jnp.ndarray:
  """`tsne`'s embedding of PCA-reduced features, from a random start drawn from `seed`."""
  joint = joint_probabilities(features, perplexity)
  initial = INITIAL_STD * jax.random.normal(jax.random.key(seed), (features.shape[0], 2))
  return optimise_embedding(joint, initial, steps)


# One program (kept across runs: `programs`), not a dozen small ones traced and compiled
# afresh by every run that draws a t-SNE; the perplexity and seed are its arguments.
EMBEDDING = programs.Program(jax.jit(embedding_of, static_argnums=3), 'tsne_embedding',
                             context='tsne', static_argnums=(3,))


def tsne(features: np.ndarray, perplexity: float = 30.0, steps: int = 1000,
         seed: int = 0) -> np.ndarray:
  """(N, 2) t-SNE embedding of (N, D) features; the same seed gives the same result."""
  features = np.asarray(features).reshape(len(features), -1)
  if not 1 <= perplexity < len(features) - 1:
    raise ValueError(f'perplexity={perplexity} must be in [1, N - 1) = [1, {len(features) - 1})')
  return np.asarray(EMBEDDING(pca(features).astype(np.float32), np.float32(perplexity),
                              np.uint32(seed), steps))


def class_colours(num_classes: int) -> np.ndarray:
  """(C, 4) RGBA colours: tab10 / tab20 when they suffice, else evenly spaced on turbo."""
  if num_classes <= 10:
    return colormaps['tab10'](np.arange(num_classes))
  if num_classes <= 20:
    return colormaps['tab20'](np.arange(num_classes))
  return colormaps['turbo'](np.linspace(0, 1, num_classes))


def marker_size(points: int) -> float:
  """Marker area (pt^2) for a scatter of `points`: large for a few hundred points, down to
  4 for tens of thousands, so the classes' clusters read at a glance either way."""
  return float(np.clip(20_000 / max(points, 1), 4, 30))


def write_tsne_figure(embedding: np.ndarray, labels: np.ndarray, class_names, path: str,
                      title: str = '') -> None:
  """A scatter of the 2-D embedding, one colour per class, with a legend of class names."""
  labels = np.asarray(labels)
  colours = class_colours(len(class_names))
  legend_columns = -(-len(class_names) // 25)
  figure = Figure(figsize=(7 + 1.6 * legend_columns, 6.5))
  axis = figure.subplots()
  size = marker_size(len(labels))
  for index, name in enumerate(class_names):
    chosen = labels == index
    axis.scatter(embedding[chosen, 0], embedding[chosen, 1], s=size, color=colours[index],
                 label=name, alpha=0.8, linewidths=0)
  axis.set_xticks([])
  axis.set_yticks([])
  axis.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), ncol=legend_columns,
              fontsize=8 if len(class_names) <= 25 else 6, markerscale=2, frameon=False)
  if title:
    axis.set_title(title)
  figure.tight_layout()
  atomic.save_figure(figure, path, dpi=100)
