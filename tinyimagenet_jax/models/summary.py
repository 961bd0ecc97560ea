"""A model's layer table, as the reports print it: layer, output shape, parameters.

    python -m tinyimagenet_jax.models.summary --config=configs/conv4_relu.py \
        --image_size=32 --num_classes=10

`layer_table` and `format_table` are plain functions for tests and notebooks;
the flags are defined and read only when this file runs as a program.
"""

import math
from typing import NamedTuple

from absl import flags
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from tinyimagenet_jax import cli
from tinyimagenet_jax import models


class Layer(NamedTuple):
  """One row: a leaf module's path, its output shape per example, its variable counts."""

  path: str
  shape: tuple[int, ...]
  params: int
  non_trainable: int


def _count(variables: dict, path: tuple[str, ...]) -> int:
  """How many numbers `variables` (one collection) holds under the module `path`."""
  flat = traverse_util.flatten_dict(variables)
  return sum(math.prod(leaf.shape) for key, leaf in flat.items() if key[:len(path)] == path)


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[Layer]:
  """Rows for the leaf modules (those calling no other module), in call order.

  Shapes come from `jax.eval_shape`, so nothing is computed or allocated.
  Batch-norm statistics count as non-trainable, as in Keras.
  """
  calls = []

  def record(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      calls.append((context.module.path, output.shape[1:]))
    return output

  with nn.intercept_methods(record):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape))))
  paths = [path for path, _ in calls]
  return [
      Layer('/'.join(path), tuple(shape), _count(variables.get('params', {}), path),
            _count(variables.get('batch_stats', {}), path))
      for path, shape in calls
      if path and not any(other[:len(path)] == path and other != path for other in paths)
  ]


def format_table(rows: list[Layer]) -> str:
  """The rows as aligned text columns, then total, trainable and non-trainable counts."""
  lines = [('Layer', 'Output shape', 'Param #')] + [
      (row.path, str(row.shape), f'{row.params + row.non_trainable:,}') for row in rows]
  widths = [max(len(line[column]) for line in lines) for column in range(3)]
  text = [f'{path:<{widths[0]}}  {shape:<{widths[1]}}  {count:>{widths[2]}}'
          for path, shape, count in lines]
  trainable = sum(row.params for row in rows)
  non_trainable = sum(row.non_trainable for row in rows)
  text.insert(1, '-' * len(text[0]))
  text += [f'Total params: {trainable + non_trainable:,}',
           f'Trainable params: {trainable:,}',
           f'Non-trainable params: {non_trainable:,}']
  return '\n'.join(text)


def main(argv: list[str]) -> None:
  """Prints the layer table of the config's model; a config mistake is one line, status 2."""
  del argv  # cli.parse_flags refused positional arguments
  config, size, channels = flags.FLAGS.config, flags.FLAGS.image_size, flags.FLAGS.channels
  model = models.build_model(config.model, flags.FLAGS.num_classes)
  rows = layer_table(model, (size, size, channels))
  print(f'Model {config.model.name!r} on {size}x{size}x{channels} input,'
        f' {flags.FLAGS.num_classes} classes')
  print(format_table(rows))


if __name__ == '__main__':
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, e.g. configs/conv4_relu.py.', lock_config=True)
  flags.DEFINE_integer('image_size', 64, 'Input height and width in pixels.')
  flags.DEFINE_integer('channels', 3, 'Input channels.')
  flags.DEFINE_integer('num_classes', 200, 'Output classes.')
  flags.mark_flags_as_required(['config'])
  cli.run(main)
