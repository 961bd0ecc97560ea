"""tinyimagenet_jax: pure-JAX, functional image-classification research code."""

from tinyimagenet_jax import xla_cpu

xla_cpu.apply_defaults()
