"""A trained run's model on a split: saved-checkpoint evaluation and predictions files.

`--config.mode=evaluate` restores the newest checkpoint of the workdir and
evaluates it on `data.eval_split` (metrics and a class-wise report);
`--config.mode=predict` writes `predictions_<split>.txt`, one line per image,
`<file name> <predicted class>` (for Tiny ImageNet the wnid: the format of
the course's evaluation server), also for unlabelled splits.
"""

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import checkpoint
from tinyimagenet_jax import config as config_lib
from tinyimagenet_jax import members
from tinyimagenet_jax import models
from tinyimagenet_jax import parallel
from tinyimagenet_jax import steps
from tinyimagenet_jax import train
from tinyimagenet_jax.analysis import classwise
from tinyimagenet_jax.data import pipeline
from tinyimagenet_jax.data import sources
from tinyimagenet_jax.data import transforms
from tinyimagenet_jax.state import TrainState

EVALUATION_JSON = 'evaluation_{split}.json'
PREDICTIONS_TXT = 'predictions_{split}.txt'


def probabilities_step(state: TrainState, batch: dict):
  """Softmax probabilities of a batch in inference mode."""
  return jax.nn.softmax(steps.predict(state, batch['image']), axis=-1)


@dataclasses.dataclass
class Restored:
  """A run's newest state with what is needed to feed it a split."""

  state: TrainState
  config: ml_collections.ConfigDict
  class_names: tuple[str, ...]
  mesh: jax.sharding.Mesh
  stacked: bool


def restore(config: ml_collections.ConfigDict, workdir: str) -> Restored:
  """The newest checkpoint of `workdir` (one model or stacked members), on this mesh."""
  mesh = parallel.make_mesh()
  config_lib.validate(config, mesh.size)
  train_source = sources.load(config.data, config.data.train_split)
  _, eval_transform = transforms.make_preprocess(config)
  steps_per_epoch = train.resolve_steps_per_epoch(config, len(train_source))
  model = models.build_model(config.model, len(train_source.class_names))
  input_shape = eval_transform(train_source[0])['image'].shape
  like, _, _ = train.initial_state(config, model, steps_per_epoch, input_shape)
  saved = checkpoint.Checkpoints(os.path.join(workdir, train.CHECKPOINTS), keep=1)
  try:
    state = saved.restore_state(parallel.put_replicated(like, mesh))
  finally:
    saved.close()
  return Restored(state, config, train_source.class_names, mesh,
                  members.member_count(config) > 1)


def split_probabilities(restored: Restored, source) -> tuple[np.ndarray, np.ndarray]:
  """(probabilities, labels) over every example of `source`, in order; probabilities
  are (N, classes), or (K, N, classes) for K stacked members."""
  _, eval_transform = transforms.make_preprocess(restored.config)
  dataset = pipeline.eval_dataset(source, eval_transform, restored.config.eval_batch_size)
  step = parallel.jit_eval_step(
      restored.mesh, members.member_step(probabilities_step) if restored.stacked
      else probabilities_step)
  chunks, labels = [], []
  for batch in pipeline.iterate(dataset, restored.config.data):
    mask = batch['mask']
    probabilities = np.asarray(jax.device_get(step(restored.state,
                                                   parallel.put_batch(batch, restored.mesh))))
    chunks.append(probabilities[..., mask, :])
    labels.append(batch['label'][mask])
  return np.concatenate(chunks, axis=-2), np.concatenate(labels)


def evaluate_saved(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the newest checkpoint on `data.eval_split`; writes the metrics as
  JSON and a class-wise report (figures, per-class table). Returns the metrics."""
  restored = restore(config, workdir)
  split = config.data.eval_split
  probabilities, labels = split_probabilities(restored, sources.load(config.data, split))
  averaged = probabilities.mean(axis=0) if restored.stacked else probabilities
  summary = classwise.write_classwise_report(labels, averaged, restored.class_names,
                                             workdir, f'evaluation_{split}')
  top5 = np.argsort(averaged, axis=-1)[:, -5:]
  result = {'split': split, 'count': int(len(labels)),
            'top1': float(np.mean(averaged.argmax(-1) == labels)),
            'top5': float(np.mean(np.any(top5 == labels[:, None], axis=-1))),
            'loss': float(-np.mean(np.log(np.maximum(averaged[np.arange(len(labels)), labels],
                                                     1e-12)))),
            **{key: summary[key] for key in ('macro_f1', 'best', 'worst')}}
  with open(os.path.join(workdir, EVALUATION_JSON.format(split=split)), 'w') as file:
    json.dump(result, file, indent=2)
  return result


def write_predictions(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`<workdir>/predictions_<split>.txt`: `<file name> <predicted class>` per image."""
  restored = restore(config, workdir)
  split = config.data.eval_split
  source = sources.load_for_prediction(config.data, split)
  probabilities, _ = split_probabilities(restored, source)
  predicted = (probabilities.mean(axis=0) if restored.stacked else probabilities).argmax(-1)
  path = os.path.join(workdir, PREDICTIONS_TXT.format(split=split))
  with open(path, 'w') as file:
    file.writelines(f'{source.name(index)} {restored.class_names[label]}\n'
                    for index, label in enumerate(predicted))
  return path
