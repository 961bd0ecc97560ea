"""The models' 2-D convolution: one whose map is smaller than its kernel is a matrix product.

XLA:CPU's algebraic simplifier swaps the operands of a convolution whose kernel is larger
than its input (a 3x3 kernel over the 2x2 or 1x1 maps at the end of the quickstart's conv4,
or of ResNet-18 with torchvision's stem on 64-pixel images), and runs what it made 5-140x
slower than the same arithmetic as one matrix product: a 3x3 convolution of 512 to 512
channels over a batch of 128 2x2 maps took 1,063 ms forward and 2,150 ms with its
gradients, against 7.8 and 43 ms (`python -m tinyimagenet_jax.bench --what=small_maps`;
WORKSPACE.md, "Convolutions smaller than their kernel"). `conv` computes such a
convolution as the input (B, H*W*C) times the kernel laid out as a matrix (H*W*C,
H'*W'*D) that holds, for each input and output position, the kernel tap linking them (zero
where none does); every other convolution is lax's, unchanged. The two agree to float
rounding (a sum in another order), on every backend.
"""

from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

NHWC = ('NHWC', 'HWIO', 'NHWC')


def is_plain_2d(lhs, rhs, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, batch_group_count=1, precision=None,
                preferred_element_type=None) -> bool:
  """Whether a convolution is NHWC/HWIO, undilated and ungrouped: the kind `conv` takes."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC) if lhs.ndim == 4 else None
  given = (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           if dimension_numbers is not None and lhs.ndim == 4 else None)
  return (lhs.ndim == 4 and given == nhwc and feature_group_count == 1 and batch_group_count == 1
          and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
          and precision is None and preferred_element_type is None)


def smaller_than_kernel(x_shape: tuple, w_shape: tuple, strides: tuple) -> bool:
  """Whether a stride-1 NHWC convolution's input map is smaller than its kernel along a
  spatial axis: the kind XLA:CPU was seen to swap (2x2 and 1x1 maps under 3x3; a 4x4 map
  is not swapped, and lax's convolution is the faster there)."""
  return all(s == 1 for s in strides) and any(
      size < kernel for size, kernel in zip(x_shape[1:3], w_shape[:2]))


def taps(size: int, kernel: int, low: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(tap, linked) along one axis of a stride-1 convolution padded by `low` before: the
  kernel tap joining input position i to output position o (i - o + low), and whether
  one does, each of shape (size, out_size)."""
  tap = np.arange(size)[:, None] - np.arange(out_size)[None, :] + low
  linked = (tap >= 0) & (tap < kernel)
  return np.clip(tap, 0, kernel - 1), linked


def as_matrix(w: jax.Array, in_hw: tuple[int, int], pads: tuple, out_hw: tuple[int, int]
              ) -> jax.Array:
  """The HWIO kernel `w` as the (H*W*C, H'*W'*D) matrix of its convolution over H x W maps
  padded by `pads` into H' x W' ones."""
  (kh, kw, channels, features), (h, w_), (oh, ow) = w.shape, in_hw, out_hw
  rows, row_linked = taps(h, kh, pads[0][0], oh)
  cols, col_linked = taps(w_, kw, pads[1][0], ow)
  gathered = w[rows[:, :, None, None], cols[None, None, :, :]]  # (h, oh, w, ow, C, D)
  linked = (row_linked[:, :, None, None] & col_linked[None, None, :, :])[..., None, None]
  matrix = jnp.where(linked, gathered, jnp.zeros((), w.dtype))
  return matrix.transpose(0, 2, 4, 1, 3, 5).reshape(h * w_ * channels, oh * ow * features)


def product(x: jax.Array, w: jax.Array, pads: tuple) -> jax.Array:
  """The stride-1 NHWC convolution of `x` by HWIO `w` with explicit `pads`, as one matrix
  product (whatever the map's size)."""
  (batch, h, w_, _), (kh, kw, _, features) = x.shape, w.shape
  out_hw = (h + sum(pads[0]) - kh + 1, w_ + sum(pads[1]) - kw + 1)
  out = x.reshape(batch, -1) @ as_matrix(w, (h, w_), pads, out_hw)
  return out.reshape(batch, *out_hw, features)


def conv(x: jax.Array, w: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
  """The NHWC convolution of `x` by HWIO `w` with explicit `pads`: a matrix `product` when
  the map is smaller than the kernel (`smaller_than_kernel`), else lax's."""
  if smaller_than_kernel(x.shape, w.shape, strides):
    return product(x, w, pads)
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC)


def explicit_pads(x_shape: tuple, w_shape: tuple, strides, padding) -> tuple:
  """`padding` ('SAME', 'VALID' or (low, high) pairs) as a tuple of int pairs."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding)
  return tuple((int(low), int(high)) for low, high in padding)


def hook(plain: Callable[[jax.Array, jax.Array, tuple, tuple], jax.Array]) -> Callable:
  """A function with `lax.conv_general_dilated`'s signature (nn.Conv's `conv_general_dilated`
  hook) that computes the plain NHWC convolutions (`is_plain_2d`) as `plain(x, w, strides,
  pads)`, with int strides and explicit pads, and every other kind through lax."""

  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                           batch_group_count=1, precision=None,
                           preferred_element_type=None) -> jax.Array:
    if not is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                       feature_group_count, batch_group_count, precision,
                       preferred_element_type):
      return lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, precision, preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    return plain(lhs, rhs, strides, explicit_pads(lhs.shape, rhs.shape, strides, padding))

  return conv_general_dilated


# The models' hook: plain convolutions through `conv`, every other kind through lax.
conv_general_dilated = hook(conv)


# Every model's convolution layer: nn.Conv (its parameters, names and initialisers) computed
# by `conv_general_dilated`.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
