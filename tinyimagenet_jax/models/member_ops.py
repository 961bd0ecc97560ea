"""A convolution whose `jax.vmap` over K members picks a fast formulation.

`conv_general_dilated` is `conv.conv` for one model (the same
forward and gradients). Under the members' `jax.vmap` (`members.py`) its
batching rule is chosen by `batching(name)`:

- 'vmap': JAX's own rule. A shared input already meets all kernels in one
  wide convolution, but an input and a kernel per member become one grouped
  convolution (feature_group_count=K), which XLA CPU runs far slower than K
  plain ones. Expected to win on GPU/TPU.
- 'fused' (the CPU choice): an input shared by every member (the batch) meets
  all K kernels in one convolution with K*D output channels; an input per
  member with a shared kernel runs as one convolution over the members folded
  into the batch axis; an input and a kernel per member run as K plain
  convolutions unrolled in the one compiled program (so are their gradients).

`custom_vmap` functions do not support reverse-mode autodiff in jax 0.10
("Linearization failed to produce known values"), so the op is a `custom_vjp`
whose forward pass and both gradients are `custom_vmap` functions.
`batching('fused')` also sends every plain `nn.Conv` through the op (a Flax method
interceptor), so model code needs no change.
"""

from collections.abc import Callable, Iterator
import contextlib
import contextvars
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyimagenet_jax.models import conv

FORMULATIONS = ('vmap', 'fused')

_FORMULATION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    'member_conv_formulation', default=None)


def default_formulation(backend: str) -> str:
  """The formulation that wins on `backend`: 'fused' on CPU, JAX's own 'vmap' elsewhere."""
  return 'fused' if backend == 'cpu' else 'vmap'


def current_formulation() -> str:
  """The formulation chosen by the innermost `batching`, else the backend's default."""
  return _FORMULATION.get() or default_formulation(jax.default_backend())


def _input_grad(w: jax.Array, g: jax.Array, strides: tuple, pads: tuple,
                x_shape: tuple) -> jax.Array:
  """The gradient of `conv.conv` with respect to its input, for output cotangent `g`."""
  x = jax.ShapeDtypeStruct(x_shape, g.dtype)
  return jax.linear_transpose(lambda x_: conv.conv(x_, w, strides, pads), x)(g)[0]


def _kernel_grad(x: jax.Array, g: jax.Array, strides: tuple, pads: tuple,
                 w_shape: tuple) -> jax.Array:
  """The gradient of `conv.conv` with respect to its kernel, for output cotangent `g`."""
  w = jax.ShapeDtypeStruct(w_shape, g.dtype)
  return jax.linear_transpose(lambda w_: conv.conv(x, w_, strides, pads), w)(g)[0]


def _wide_conv(x: jax.Array, ws: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
  """x (B,H,W,C) shared, ws (K,kh,kw,C,D) -> (K,B,Ho,Wo,D): one conv with K*D outputs."""
  k, kh, kw, c, d = ws.shape
  y = conv.conv(x, jnp.moveaxis(ws, 0, -2).reshape(kh, kw, c, k * d), strides, pads)
  return jnp.moveaxis(y.reshape(*y.shape[:-1], k, d), -2, 0)


def _folded_conv(xs: jax.Array, w: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
  """xs (K,B,H,W,C), w shared -> (K,B,Ho,Wo,D): the members folded into the batch axis."""
  y = conv.conv(xs.reshape(-1, *xs.shape[2:]), w, strides, pads)
  return y.reshape(*xs.shape[:2], *y.shape[1:])


def _each_member(fn, *stacked: jax.Array) -> jax.Array:
  """`fn` on every member's slice of the stacked arrays, unrolled, restacked."""
  return jnp.stack([fn(*(array[k] for array in stacked)) for k in range(stacked[0].shape[0])])


def _broadcast(array: jax.Array, batched: bool, size: int) -> jax.Array:
  """`array` with a leading member axis of `size`, added when it has none."""
  return array if batched else jnp.broadcast_to(array, (size, *array.shape))


def _plain_rule(fn, size: int, in_batched: list[bool], *args) -> tuple[jax.Array, bool]:
  """JAX's own batching of `fn` ('vmap')."""
  in_axes = [0 if batched else None for batched in in_batched]
  return jax.vmap(fn, in_axes=in_axes, axis_size=size)(*args), True


@functools.lru_cache(maxsize=None)
def _batched_ops(strides: tuple, pads: tuple, x_shape: tuple, w_shape: tuple):
  """Forward, input gradient and kernel gradient of one convolution, as custom_vmap functions."""

  @jax.custom_batching.custom_vmap
  def forward(x, w):
    return conv.conv(x, w, strides, pads)

  @forward.def_vmap
  def forward_rule(size, in_batched, x, w):
    if current_formulation() == 'vmap':
      return _plain_rule(forward.fun, size, in_batched, x, w)
    x_batched, w_batched = in_batched
    if not x_batched:
      return _wide_conv(x, w, strides, pads), True
    if not w_batched:
      return _folded_conv(x, w, strides, pads), True
    return _each_member(lambda x1, w1: conv.conv(x1, w1, strides, pads), x, w), True

  def gradient(own: Callable, transposed_conv: Callable, folded_shape: tuple):
    """A custom_vmap gradient `own(operand, g)` of the convolution. Batched over members
    with the operand shared, it is the transpose of the one-program `transposed_conv`
    (folded_shape: its members' operands); otherwise one per member."""
    op = jax.custom_batching.custom_vmap(own)

    @op.def_vmap
    def rule(size, in_batched, operand, g):
      if current_formulation() == 'vmap':
        return _plain_rule(own, size, in_batched, operand, g)
      operand_batched, g_batched = in_batched
      if not operand_batched:
        members = jax.ShapeDtypeStruct((size, *folded_shape), g.dtype)
        return jax.linear_transpose(lambda ys: transposed_conv(operand, ys), members)(g)[0], True
      return _each_member(own, operand, _broadcast(g, g_batched, size)), True

    return op

  input_grad = gradient(lambda w, g: _input_grad(w, g, strides, pads, x_shape),
                        lambda w, xs: _folded_conv(xs, w, strides, pads), x_shape)
  kernel_grad = gradient(lambda x, g: _kernel_grad(x, g, strides, pads, w_shape),
                         lambda x, ws: _wide_conv(x, ws, strides, pads), w_shape)

  return forward, input_grad, kernel_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def member_conv(x: jax.Array, w: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
  """NHWC/HWIO convolution with explicit `pads`; see the module doc for its batching."""
  return _batched_ops(strides, pads, x.shape, w.shape)[0](x, w)


def _member_conv_fwd(x, w, strides, pads):
  """The convolution, keeping its input and kernel for the gradients."""
  return member_conv(x, w, strides, pads), (x, w)


def _member_conv_bwd(strides, pads, residuals, g):
  """Input and kernel gradients, each a custom_vmap function batched by the formulation."""
  x, w = residuals
  _, input_grad, kernel_grad = _batched_ops(strides, pads, x.shape, w.shape)
  return input_grad(w, g), kernel_grad(x, g)


member_conv.defvjp(_member_conv_fwd, _member_conv_bwd)


# `lax.conv_general_dilated`'s signature (nn.Conv's `conv_general_dilated` hook): plain
# convolutions through `member_conv`, which batches over members as `batching` chooses;
# other kinds of convolution pass through.
conv_general_dilated = conv.hook(member_conv)


def _route_conv(next_fun, args, kwargs, context):
  """Method interceptor: an `nn.Conv` with the models' convolution (`conv.Conv`) or lax's
  runs through `conv_general_dilated` instead, with its own parameters and settings."""
  module = context.module
  if (type(module) is not nn.Conv or context.method_name != '__call__'
      or module.conv_general_dilated not in (None, conv.conv_general_dilated)
      or module.conv_general_dilated_cls is not None
      or not module.has_variable('params', 'kernel')):
    return next_fun(*args, **kwargs)
  routed = module.clone(parent=None, name=None, conv_general_dilated=conv_general_dilated)
  return routed.apply({'params': module.variables['params']}, *args, **kwargs)


@contextlib.contextmanager
def batching(formulation: str) -> Iterator[None]:
  """Within: member convolutions batch as `formulation` ('vmap' or 'fused'); 'fused'
  also routes every plain `nn.Conv` through `conv_general_dilated`."""
  if formulation not in FORMULATIONS:
    raise ValueError(f'Unknown member formulation {formulation!r}; choose one of {FORMULATIONS}')
  token = _FORMULATION.set(formulation)
  try:
    if formulation == 'fused':
      with nn.intercept_methods(_route_conv):
        yield
    else:
      yield
  finally:
    _FORMULATION.reset(token)
