"""Tiny ImageNet as a TFDS dataset; importing this package registers `tiny_imagenet`.

`python -m tinyimagenet_jax.data.tiny_imagenet.export` writes the first
report's artifacts (classes, labels, stats, manifests) for any config.
"""

from tinyimagenet_jax.data.tiny_imagenet.tiny_imagenet_dataset_builder import Builder
from tinyimagenet_jax.data.tiny_imagenet.tiny_imagenet_dataset_builder import subset_config
from tinyimagenet_jax.data.tiny_imagenet.tiny_imagenet_dataset_builder import TinyImagenetConfig
