"""The reports' experiments: a name -> run(config, workdir) returning what it wrote.

`config.experiment` names one; launch.py runs it instead of a single run.
"""

from collections.abc import Callable

import ml_collections

from tinyimagenet_jax.experiments import cifar10_conv3
from tinyimagenet_jax.experiments import cifar100_lenet
from tinyimagenet_jax.experiments import grid
from tinyimagenet_jax.experiments import relu_vs_tanh
from tinyimagenet_jax.experiments import tiny_ensembles
from tinyimagenet_jax.experiments import tiny_models

EXPERIMENTS: dict[str, Callable[[ml_collections.ConfigDict, str], dict]] = {
    'cifar10_conv3': cifar10_conv3.run,
    'cifar100_lenet': cifar100_lenet.run,
    'grid': grid.run,
    'relu_vs_tanh': relu_vs_tanh.run,
    'tiny_ensembles': tiny_ensembles.run,
    'tiny_models': tiny_models.run,
}
