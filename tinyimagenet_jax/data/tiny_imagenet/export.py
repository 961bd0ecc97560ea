"""Writes the first report's Tiny ImageNet artifacts for a config, from the archive.

    python -m tinyimagenet_jax.data.tiny_imagenet.export \
        --archive=tiny-imagenet-200.zip --out=data_subset --config=subset100
    python -m tinyimagenet_jax.data.tiny_imagenet.export \
        --archive=tiny-imagenet-200.tgz --out=subset5 --num_classes=5 --split=20,5,5 --seed=0

--archive is the official .zip, a .tar.gz/.tgz of it, or the extracted
folder. See `artifacts` for the files written. Mistakes a user can fix print
one line and exit with status 2.
"""

from absl import app
from absl import flags

from tinyimagenet_jax import cli
from tinyimagenet_jax.data.tiny_imagenet import artifacts
from tinyimagenet_jax.data.tiny_imagenet import tiny_imagenet_dataset_builder as builder_lib

_ARCHIVE = flags.DEFINE_string(
    'archive', None, 'tiny-imagenet-200.zip, a .tar.gz/.tgz of it, or its extracted folder.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write the artifacts into (created).')
_CONFIG = flags.DEFINE_enum(
    'config', None, [c.name for c in builder_lib.Builder.BUILDER_CONFIGS],
    'A predefined config; or give --num_classes (and --split, --seed) for a subset.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, 'Classes drawn for a subset.')
_SPLIT = flags.DEFINE_list(
    'split', ['300', '100', '100'], 'A subset\'s train,validation,test images per class.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the subset\'s draws.')
_SKIP_CORRUPT = flags.DEFINE_bool(
    'skip_corrupt', False, 'Skip bad images and annotation lines (listed in'
    ' dataset_stats.json) instead of stopping at the first.')


def chosen_config() -> builder_lib.TinyImagenetConfig:
  """The config named by --config, or the subset given by --num_classes/--split/--seed."""
  if (_CONFIG.value is None) == (_NUM_CLASSES.value is None):
    raise app.UsageError('Give either --config or --num_classes (with --split, --seed).')
  if _CONFIG.value is not None:
    return builder_lib.Builder.builder_configs[_CONFIG.value]
  try:
    train, validation, test = (int(s) for s in _SPLIT.value)
  except ValueError as error:
    raise app.UsageError(
        f'--split={",".join(_SPLIT.value)} must be three whole numbers, e.g. 300,100,100.'
    ) from error
  return builder_lib.subset_config(_NUM_CLASSES.value, train, validation, test, _SEED.value)


def main(argv: list[str]) -> None:
  del argv  # cli.parse_flags refused positional arguments
  config = chosen_config()
  counts = artifacts.write_artifacts(_ARCHIVE.value, _OUT.value, config, _SKIP_CORRUPT.value)
  print(f'Wrote the {config.name} artifacts to {_OUT.value}: '
        + ', '.join(f'{split} {count:,}' for split, count in counts.items()) + ' images.')
  if _SKIP_CORRUPT.value:
    skipped = artifacts.read_stats(_OUT.value)['num_skipped']
    print(f'Skipped {skipped} unreadable image(s) or annotation line(s); each is listed'
          f' under "skipped" in {_OUT.value}/dataset_stats.json.')


if __name__ == '__main__':
  flags.mark_flags_as_required(['archive', 'out'])
  cli.run(main)
