"""Weights kept at chosen epochs (config.snapshot_epochs), for analyses of training.

Checkpoints rotate; a snapshot stays: `<workdir>/snapshots/epoch_<n>.npz`
holds the params and batch statistics after epoch n as flat '/'-joined names,
readable with numpy alone (t-SNE of the latent space at epochs 4, 14, 28).
"""

import os

import flax.traverse_util
import jax
import numpy as np

from tinyimagenet_jax import atomic
from tinyimagenet_jax.errors import DataError
from tinyimagenet_jax.state import TrainState

SNAPSHOTS = 'snapshots'
COLLECTIONS = ('params', 'batch_stats')


def snapshot_path(workdir: str, epoch: int) -> str:
  """Where the snapshot of `epoch` lives."""
  return os.path.join(workdir, SNAPSHOTS, f'epoch_{epoch:03d}.npz')


def save_if_chosen(state: TrainState, epoch: int, chosen: tuple[int, ...], workdir: str) -> None:
  """Writes the snapshot of `epoch` when it is one of `chosen` (atomically)."""
  if epoch not in chosen:
    return
  variables = {name: jax.device_get(getattr(state, name)) for name in COLLECTIONS}
  flat = flax.traverse_util.flatten_dict(variables, sep='/')
  path = snapshot_path(workdir, epoch)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic.replaced_file(path) as temporary, open(temporary, 'wb') as file:
    np.savez(file, **{name: np.asarray(value) for name, value in flat.items()})


def load_snapshot(workdir: str, epoch: int) -> dict:
  """{'params', 'batch_stats'} saved after `epoch`, as nested numpy arrays."""
  path = snapshot_path(workdir, epoch)
  if not os.path.exists(path):
    raise DataError(f'no snapshot of epoch {epoch} in {workdir}; add {epoch} to'
                    ' --config.snapshot_epochs and train again.')
  with np.load(path) as saved:
    nested = flax.traverse_util.unflatten_dict(dict(saved), sep='/')
  return {name: nested.get(name, {}) for name in COLLECTIONS}
