"""Convolutions over maps smaller than their kernel: lax's against `models.conv`'s product.

`small_maps` times, for each case (a stride-1 'SAME' convolution as the models run it), lax's
convolution and `conv.conv` (the kernel as one matrix), forward and with both gradients,
each jitted, `--batches` calls a timing after `--warmup`, alternated `--repeats` times
(medians, milliseconds a call). The last case's map is as large as its kernel's reach, the
kind `conv.conv` leaves to lax: there the product is the slower one.

    python -m tinyimagenet_jax.bench --what=small_maps --batches=20 --warmup=2 --repeats=5
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from tinyimagenet_jax.bench import common
from tinyimagenet_jax.models import conv

# (what runs it, batch, map side, input channels, output channels), each with a 3x3 kernel.
CASES = (('quickstart conv4, 3rd conv', 64, 2, 128, 256),
         ('quickstart conv4, 4th conv', 64, 1, 256, 256),
         ('vgg16 at 32x32, resnet18 (torchvision stem) at 64x64', 128, 2, 512, 512),
         ('a 4x4 map (left to lax)', 64, 4, 64, 128))
PADS = ((1, 1), (1, 1))


def lax_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """lax's 'SAME' convolution, as nn.Conv called it before `conv.Conv`."""
  return lax.conv_general_dilated(x, w, (1, 1), PADS, dimension_numbers=conv.NHWC)


def product_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """The same convolution as `conv.conv` computes a map smaller than its kernel."""
  return conv.product(x, w, PADS)


def with_gradients(fn: Callable) -> Callable:
  """The loss sum(sin(fn(x, w))), its value and its gradients in x and w."""
  return jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), argnums=(0, 1))


def milliseconds(fn: Callable, x: jax.Array, w: jax.Array, args: common.Args) -> Callable:
  """A call that runs jitted `fn` `args.batches` times and waits (after the warm-up)."""
  jitted = jax.jit(fn)
  for _ in range(max(args.warmup, 1)):
    jax.block_until_ready(jitted(x, w))
  return lambda: jax.block_until_ready([jitted(x, w) for _ in range(args.batches)])


def small_maps(args: common.Args) -> list[dict]:
  """One row per case: lax's and the product's milliseconds a call, forward and with
  gradients, and lax's over the product's."""
  rows = []
  rng = np.random.default_rng(0)
  for name, batch, side, channels, features in CASES:
    x = jnp.asarray(rng.standard_normal((batch, side, side, channels)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, channels, features)), jnp.float32)
    contenders = {f'{kind}_{part}': milliseconds(wrap(fn), x, w, args)
                  for part, wrap in (('forward', lambda fn: fn), ('gradients', with_gradients))
                  for kind, fn in (('lax', lax_conv), ('product', product_conv))}
    times = {key: 1e3 * common.median(values) / args.batches
             for key, values in common.alternate(contenders, args.repeats).items()}
    row = {'case': name, 'shape': f'{batch}x{side}x{side}x{channels} -> {features}'}
    for part in ('forward', 'gradients'):
      lax_ms, product_ms = times[f'lax_{part}'], times[f'product_{part}']
      row |= {f'lax_{part}_ms': round(lax_ms, 3), f'product_{part}_ms': round(product_ms, 3),
              f'{part}_lax_over_product': round(lax_ms / product_ms, 2)}
    rows.append(row)
  return rows
