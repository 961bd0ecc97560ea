"""Benchmarks (not tests): measured figures printed as a table and written as JSON.

    python -m tinyimagenet_jax.bench --what=<benchmark> [--config=configs/<x>.py] \
        [--batches=100] [--json=results.json]

Each benchmark is a function of `common.Args` returning rows (dicts); the
registry in `__main__` names them. Comparisons run side by side in one
process, alternating, and report medians and ratios: these machines are noisy.
The contenders (PyTorch, Keras, tf.data) and the memory sampler (psutil) are
the `bench` extra: pip install -e '.[bench]'.
"""
