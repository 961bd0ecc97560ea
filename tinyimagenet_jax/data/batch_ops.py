"""Batch-level augmentation: mixup and cutmix of each example with a partner.

Ops are pure numpy functions of (batch, rng, alpha), where `batch` holds
'image' (B, H, W, C) float32 and 'label' (B,) int32. The partner of row i is
row B-1-i (the batch reversed; in an odd batch the middle row is its own
partner). Each op returns a new batch with two extra keys, for the loss
w * CE(label) + (1 - w) * CE(mix_label):

  mix_label   (B,) int32: the partner's label.
  mix_weight  (B,) float32: w, the weight of the example's own label.

One lambda ~ Beta(alpha, alpha) is drawn per batch.
"""

from collections.abc import Callable, Sequence
import functools

import ml_collections
import numpy as np

BatchOp = Callable[[dict, np.random.Generator], dict]


def partner(array: np.ndarray) -> np.ndarray:
  """Each row's partner along the batch axis: row i gets row B-1-i."""
  return array[::-1]


def with_mix(batch: dict, image: np.ndarray, weight: float) -> dict:
  """`batch` with its mixed `image`, the partners' labels and the own-label `weight`."""
  labels = batch['label']
  return {**batch,
          'image': image,
          'mix_label': np.ascontiguousarray(partner(labels), np.int32),
          'mix_weight': np.full(len(labels), weight, np.float32)}


def mixup(batch: dict, rng: np.random.Generator, alpha: float) -> dict:
  """mixup (Zhang et al. 2018): image = w * image + (1 - w) * partner, w ~ Beta(alpha, alpha)."""
  weight = np.float32(rng.beta(alpha, alpha))
  images = batch['image']
  return with_mix(batch, weight * images + (1 - weight) * partner(images), weight)


def cutmix_box(
    height: int, width: int, rng: np.random.Generator, area_fraction: float
) -> tuple[int, int, int, int]:
  """(top, bottom, left, right) of a box of `area_fraction` of the image, clipped to it.

  The box keeps the image's aspect ratio and is centred at a uniformly random
  pixel, so near an edge the clipped box is smaller (CutMix, Yun et al. 2019).
  """
  side = np.sqrt(area_fraction)
  box_height, box_width = round(height * side), round(width * side)
  centre_y, centre_x = rng.integers(0, [height, width])
  top, bottom = np.clip([centre_y - box_height // 2, centre_y - box_height // 2 + box_height],
                        0, height)
  left, right = np.clip([centre_x - box_width // 2, centre_x - box_width // 2 + box_width],
                        0, width)
  return int(top), int(bottom), int(left), int(right)


def cutmix(batch: dict, rng: np.random.Generator, alpha: float) -> dict:
  """CutMix: pastes a box of area 1 - lambda from the partner, lambda ~ Beta(alpha, alpha).

  The weight is the exact fraction of the image's own pixels left once the box
  is clipped to the image, not lambda itself.
  """
  images = batch['image']
  height, width = images.shape[1:3]
  top, bottom, left, right = cutmix_box(height, width, rng, 1 - rng.beta(alpha, alpha))
  mixed = images.copy()
  mixed[:, top:bottom, left:right] = partner(images)[:, top:bottom, left:right]
  weight = 1 - (bottom - top) * (right - left) / (height * width)
  return with_mix(batch, mixed, weight)


def one_of(batch: dict, rng: np.random.Generator, ops: Sequence[BatchOp]) -> dict:
  """Applies one of `ops`, each with equal probability, to the whole batch."""
  return ops[rng.integers(len(ops))](batch, rng)


# config.augment field -> (its alpha -> a batch op).
BATCH_OPS: dict[str, Callable[[float], BatchOp]] = {
    'mixup_alpha': lambda alpha: functools.partial(mixup, alpha=float(alpha)),
    'cutmix_alpha': lambda alpha: functools.partial(cutmix, alpha=float(alpha)),
}


def make_batch_transform(config: ml_collections.ConfigDict) -> BatchOp | None:
  """The batch op of `config.augment`, or None when mixup and cutmix are both off.

  With both on, each batch gets mixup or cutmix with equal probability.
  """
  ops = tuple(make(config.augment[name])
              for name, make in BATCH_OPS.items() if config.augment[name])
  if not ops:
    return None
  return ops[0] if len(ops) == 1 else functools.partial(one_of, ops=ops)
