"""tinyimagenet_jax: pure-JAX, functional image-classification research code.

Importing it (or any of its modules) changes nothing in the process; programs
apply the machine tuning on purpose with `tinyimagenet_jax.tuning.apply()`.
"""
