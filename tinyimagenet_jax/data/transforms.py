"""Numpy preprocessing and augmentation: small pure functions of (image, rng).

Images here are float32 HxWxC in [0, 1]. Augmentations are switched on by the
`config.augment` fields (a zero or False value means off) and always run in the
order of `AUGMENTATIONS`. The composed transforms are picklable dataclasses so
grain can ship them to worker processes.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools

import ml_collections
import numpy as np

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def to_float(image: np.ndarray) -> np.ndarray:
  """uint8 pixels as float32 in [0, 1]."""
  return image.astype(np.float32) * np.float32(1 / 255)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Per-channel (image - mean) / std."""
  return (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def random_flip(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
  """Mirrors left-right with probability `prob`."""
  return image[:, ::-1] if rng.random() < prob else image


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
  """Zero-pads `pad` pixels on each side, then crops the original size back."""
  height, width = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  return padded[top:top + height, left:left + width]


# config.augment field -> (its value -> an augmentation op).
AUGMENTATIONS: dict[str, Callable[..., Augmentation]] = {
    'pad_crop': lambda pad: functools.partial(pad_and_random_crop, pad=int(pad)),
    'flip_prob': lambda prob: functools.partial(random_flip, prob=float(prob)),
}


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Record -> model input: scale, augment (train only), normalise."""

  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()
  augmentations: tuple[Augmentation, ...] = ()

  def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
    image = to_float(record['image'])
    for augment in self.augmentations:
      image = augment(image, rng)
    if self.mean:
      image = normalize(image, self.mean, self.std)
    return {'image': np.ascontiguousarray(image, np.float32),
            'label': np.int32(record['label'])}


def make_preprocess(config: ml_collections.ConfigDict) -> tuple[Preprocess, Preprocess]:
  """(train, eval) transforms from `config.data` and `config.augment`."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  augmentations = tuple(
      make(config.augment[name])
      for name, make in AUGMENTATIONS.items() if config.augment[name])
  return Preprocess(mean, std, augmentations), Preprocess(mean, std)
