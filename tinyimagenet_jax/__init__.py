"""tinyimagenet_jax: pure-JAX, functional image-classification research code."""
