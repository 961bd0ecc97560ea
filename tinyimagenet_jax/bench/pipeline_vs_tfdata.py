"""Input pipeline figures: grain against tf.data on the same images, and the step's wait for data.

`pipeline_vs_tfdata`: images/s of the project's grain training pipeline, with 0
and with 2 worker processes, against a tf.data pipeline doing the same decode,
resize/crop and augmentation on the same encoded images (parallel map with
AUTOTUNE, batch, prefetch), alternated `--repeats` times in one process (medians);
and each pipeline's images/s over what the matching model's jitted train step
consumes on one device (above 1, the pipeline can keep up). The cases:

    cifar10     CIFAR-10 JPEG files, flip + pad-crop 4, batch 128, conv4
    tiny64      Tiny ImageNet 64x64 from the prepared ArrayRecord, flip + pad-crop 8
                + rotation up to 15 degrees, normalised, batch 256, tiny_m1
    alexnet224  Tiny ImageNet, resize 256, random crop 224, flip, normalised,
                batch 64, alexnet
    cifar10_decoded, tiny64_decoded
                the same, the pixels read from the decoded cache
                (`config.data.decoded_cache`, in --config.data.cache_dir); tf.data
                then maps the same ops over TF_RECORDS of the same decoded images

tf.data decodes JPEGs with the IDCT that PIL uses (`INTEGER_ACCURATE`), so both
see the same pixels. For Tiny ImageNet it parses the same serialized TFDS
examples (PNG bytes) that grain's source reads, `TF_RECORDS` of them held in
memory: a generous reference that never touches the disk. Every timed turn first
pulls `--warmup` untimed batches, which drains what a pipeline read ahead while
the others ran: set it above the read-ahead (grain: data.prefetch_batches per
process).

`step_waits`: `--batches` train steps through the training loop's own
`train.train_epoch` fed by the real pipeline (a fresh stream each turn, its first
batch untimed as in `train_and_evaluate`), against the same steps fed one cached
host batch (the same loop, no pipeline) and one cached device batch (no
pipeline, no host-to-device copy), alternated; goal: the real pipeline within 5%.

Data locations come from --config: `data.root` is the CIFAR-10 image folder
(`<root>/train/<class>/*.jpg`), `data.data_dir` the TFDS folder holding the
prepared tiny_imagenet; a case whose data is not given is left out.
"""

from collections.abc import Callable, Iterator, Sequence
import contextlib
import itertools
import time

import jax
import ml_collections
import numpy as np

from tinyimagenet_jax import build, models, optim, parallel, train
from tinyimagenet_jax.bench import common
from tinyimagenet_jax.config import base_config
from tinyimagenet_jax.data import decoded_cache, sources, transforms
from tinyimagenet_jax.state import create_train_state

GRAIN_WORKERS = (0, 2)
# Serialized Tiny ImageNet examples tf.data holds in memory (about 40 MB), drawn at random.
TF_RECORDS = 4096
# Any per-channel normalisation costs the same; these stand in for the datasets' own.
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# The augmentations the tf.data twin implements (the cases use only these).
TF_AUGMENTATIONS = ('pad_crop', 'flip_prob', 'rotate_degrees')
WAIT_GOAL = 1.05


def cifar10_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """CIFAR-10 JPEG files, flip + pad-crop 4, batch 128, conv4 (the first report's setup)."""
  config = base_config()
  config.data.name, config.data.root = 'image_folder', locations.root
  config.augment.flip_prob, config.augment.pad_crop = 0.5, 4
  config.model.name, config.batch_size = 'conv4', 128
  return config


def _tiny_imagenet_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The prepared full Tiny ImageNet, read offline, normalised, flipped half the time."""
  config = base_config()
  config.data.name, config.data.data_dir = 'tiny_imagenet', locations.data_dir
  config.data.download = False
  config.data.mean, config.data.std = MEAN, STD
  config.augment.flip_prob = 0.5
  return config


def tiny64_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny ImageNet 64x64, flip + pad-crop 8 + rotation up to 15 degrees, batch 256, tiny_m1."""
  config = _tiny_imagenet_config(locations)
  config.augment.pad_crop, config.augment.rotate_degrees = 8, 15.0
  config.model.name, config.batch_size = 'tiny_m1', 256
  return config


def alexnet224_config(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny ImageNet on the AlexNet path: resize 256, random crop 224, flip; batch 64, alexnet."""
  config = _tiny_imagenet_config(locations)
  config.data.resize_shorter, config.data.crop_size = 256, 224
  config.model.name, config.batch_size = 'alexnet', 64
  return config


def decoded(case: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]
            ) -> Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]:
  """`case` reading its pixels from the decoded cache (in --config.data.cache_dir)."""

  def config_fn(locations: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = case(locations)
    config.data.decoded_cache, config.data.cache_dir = True, locations.cache_dir
    return config

  return config_fn


CASES: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]] = {
    'cifar10': cifar10_config,
    'tiny64': tiny64_config,
    'alexnet224': alexnet224_config,
    'cifar10_decoded': decoded(cifar10_config),
    'tiny64_decoded': decoded(tiny64_config),
}


def chosen_cases(args: common.Args, names: Sequence[str]) -> dict[str, ml_collections.ConfigDict]:
  """The configs of the cases --models names (else `names`) whose data --config locates
  (data.root, data.data_dir)."""
  locations = args.require_config().data
  unknown = set(args.models) - set(CASES)
  if unknown:
    raise ValueError(f'no pipeline case {sorted(unknown)[0]!r}; the cases: {", ".join(CASES)}.')
  configs = {name: CASES[name](locations) for name in args.models or names}
  return {name: config for name, config in configs.items()
          if (config.data.root if config.data.name == 'image_folder' else config.data.data_dir)}


# The tf.data twin of transforms.Preprocess.


def tf_decode(tf, encoded):
  """Encoded JPEG or PNG bytes as uint8 RGB; JPEGs with PIL's IDCT, so the pixels agree."""
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_png(encoded, channels=3))


def tf_resize_shorter(tf, image, size: int):
  """Bilinear (antialiased, as PIL) resize so the shorter side is `size`, the longer rounded
  half up as `transforms.shorter_side_shape`."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  long = (2 * long * size + short) // (2 * short)
  shape = tf.where(height <= width, tf.stack([size, long]), tf.stack([long, size]))
  return tf.clip_by_value(tf.image.resize(image, shape, antialias=True), 0.0, 1.0)


def tf_center_crop(tf, image, size: int):
  """The central size x size window; an odd margin puts its extra line below/right."""
  top, left = (tf.shape(image)[0] - size) // 2, (tf.shape(image)[1] - size) // 2
  return image[top:top + size, left:left + size]


def tf_random_crop(tf, image, height, width):
  """A height x width window at a uniformly random position."""
  return tf.image.random_crop(image, tf.stack([height, width, tf.shape(image)[2]]))


def tf_pad_and_random_crop(tf, image, pad: int):
  """Zero-pads `pad` pixels on each side, then crops the original size back."""
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  return tf_random_crop(tf, padded, tf.shape(image)[0], tf.shape(image)[1])


def tf_random_flip(tf, image, prob: float):
  """Mirrors left-right with probability `prob`."""
  return tf.cond(tf.random.uniform([]) < prob, lambda: image[:, ::-1], lambda: image)


def tf_rotate(tf, image, degrees):
  """Rotates counterclockwise about the centre (bilinear), edge-filled, same size: as
  `transforms.rotate`."""
  angle = tf.cast(degrees, tf.float32) * (np.pi / 180)
  cos, sin = tf.cos(angle), tf.sin(angle)
  height, width = (tf.cast(tf.shape(image)[i] - 1, tf.float32) for i in (0, 1))
  x_offset = (width - (cos * width - sin * height)) / 2
  y_offset = (height - (sin * width + cos * height)) / 2
  # Maps each output pixel (x, y) to the input point it samples.
  matrix = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[None]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=matrix, output_shape=tf.shape(image)[:2],
      fill_value=0.0, interpolation='BILINEAR', fill_mode='NEAREST')[0]


def tf_preprocess(config: ml_collections.ConfigDict, train_mode: bool) -> Callable:
  """The tf.data twin of `transforms.make_preprocess(config)` (train or eval): uint8
  HxWxC -> float32 model input, the same ops in the same order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  data, augment = config.data, config.augment
  missing = [name for name in transforms.AUGMENTATIONS
             if augment[name] and name not in TF_AUGMENTATIONS]
  if missing:
    raise ValueError(f'the tf.data reference has no {missing[0]!r} augmentation; it has'
                     f' {", ".join(TF_AUGMENTATIONS)}.')

  def preprocess(image):
    image = tf.image.convert_image_dtype(image, tf.float32)
    if data.resize_shorter:
      image = tf_resize_shorter(tf, image, int(data.resize_shorter))
    if data.crop_size:
      size = int(data.crop_size)
      image = (tf_random_crop(tf, image, size, size) if train_mode
               else tf_center_crop(tf, image, size))
    if train_mode and augment.pad_crop:
      image = tf_pad_and_random_crop(tf, image, int(augment.pad_crop))
    if train_mode and augment.flip_prob:
      image = tf_random_flip(tf, image, float(augment.flip_prob))
    if train_mode and augment.rotate_degrees:
      degrees = float(augment.rotate_degrees)
      image = tf_rotate(tf, image, tf.random.uniform([], -degrees, degrees))
    if data.mean:
      image = (image - tf.constant(data.mean, tf.float32)) / tf.constant(data.std, tf.float32)
    return image

  return preprocess


def _tf_batches(tf, examples, load: Callable, batch_size: int, shuffle_seed: int | None):
  """`examples` (shuffled with a full buffer unless `shuffle_seed` is None), endlessly,
  through `load` in parallel (AUTOTUNE), batched, prefetched."""
  if shuffle_seed is not None:
    examples = examples.shuffle(examples.cardinality(), seed=shuffle_seed)
  return (examples.repeat()
          .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=shuffle_seed is None)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def tf_files_dataset(paths: Sequence[str], labels: Sequence[int], preprocess: Callable,
                     batch_size: int, shuffle_seed: int | None = 0):
  """tf.data batches {'image', 'label'} read from image files, as grain's image-folder source."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def load(path, label):
    return {'image': preprocess(tf_decode(tf, tf.io.read_file(path))),
            'label': tf.cast(label, tf.int32)}

  files = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64)))
  return _tf_batches(tf, files, load, batch_size, shuffle_seed)


def tf_records_dataset(records: Sequence[bytes], preprocess: Callable, batch_size: int,
                       shuffle_seed: int | None = 0):
  """tf.data batches {'image', 'label'} parsed from serialized TFDS examples (encoded
  `image`, int `label`) held in memory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  features = {'image': tf.io.FixedLenFeature([], tf.string),
              'label': tf.io.FixedLenFeature([], tf.int64)}

  def load(record):
    example = tf.io.parse_single_example(record, features)
    return {'image': preprocess(tf_decode(tf, example['image'])),
            'label': tf.cast(example['label'], tf.int32)}

  return _tf_batches(tf, tf.data.Dataset.from_tensor_slices(list(records)), load, batch_size,
                     shuffle_seed)


def tf_pixels_dataset(images: np.ndarray, labels: np.ndarray, preprocess: Callable,
                      batch_size: int, shuffle_seed: int | None = 0):
  """tf.data batches {'image', 'label'} from decoded uint8 pixels held in memory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def load(image, label):
    return {'image': preprocess(image), 'label': tf.cast(label, tf.int32)}

  pixels = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
  return _tf_batches(tf, pixels, load, batch_size, shuffle_seed)


def serialized_records(source: sources.TfdsSource, count: int, seed: int) -> list[bytes]:
  """`count` of a TFDS source's records, drawn at random, as the bytes stored on disk."""
  raw = source.records.data_source
  indices = np.random.default_rng(seed).choice(len(raw), min(count, len(raw)), replace=False)
  return [raw[int(index)] for index in indices]


def tf_train_dataset(config: ml_collections.ConfigDict, source: Sequence):
  """The tf.data reference for a case: its training ops on the same encoded images, or on
  `TF_RECORDS` of the same decoded pixels (drawn at random) for a decoded-cache case."""
  preprocess = tf_preprocess(config, train_mode=True)
  if isinstance(source, decoded_cache.DecodedSource):
    chosen = np.sort(np.random.default_rng(config.seed).choice(
        len(source), min(TF_RECORDS, len(source)), replace=False))
    return tf_pixels_dataset(np.stack([source[int(i)]['image'] for i in chosen]),
                             source.labels[chosen], preprocess, config.batch_size, config.seed)
  if isinstance(source, sources.ImageFolderSource):
    return tf_files_dataset(source.paths, source.labels, preprocess, config.batch_size,
                            config.seed)
  return tf_records_dataset(serialized_records(source, TF_RECORDS, config.seed), preprocess,
                            config.batch_size, config.seed)


# Timing.


def grain_stream(config: ml_collections.ConfigDict, source: Sequence,
                 num_workers: int | None = None) -> Iterator[dict]:
  """The training loop's grain stream for `config` (`num_workers` worker processes if given)."""
  if num_workers is not None:
    config = config.copy_and_resolve_references()
    config.data.num_workers = num_workers
  return build.train_stream(config, source, transforms.make_preprocess(config)[0])


def timed_batches(stream: Iterator, batches: int, warmup: int) -> float:
  """Seconds for `batches` batches of `stream` after `warmup` untimed ones."""
  for _ in range(warmup):
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return time.perf_counter() - start


def alternate_timed(contenders: dict[str, Callable[[], float]], repeats: int
                    ) -> dict[str, list[float]]:
  """Each contender's own timing (it returns its seconds), called in turn `repeats` times."""
  times: dict[str, list[float]] = {name: [] for name in contenders}
  for _ in range(repeats):
    for name, contender in contenders.items():
      times[name].append(contender())
  return times


def step_images_per_second(config: ml_collections.ConfigDict, host_batch: dict,
                           num_classes: int, repeats: int) -> float:
  """Images/s of the config's model's jitted train step on one device (median of `repeats`
  steps after a compiling one)."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = models.build_model(config.model, num_classes)
  tx = optim.build_optimizer(config.optimizer, 100, config.num_epochs)
  state = parallel.put_replicated(
      create_train_state(model, tx, config.seed, host_batch['image'].shape[1:]), mesh)
  step, batch = parallel.jit_train_step(mesh), parallel.put_batch(host_batch, mesh)
  seconds = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, batch))[0]
    seconds.append(time.perf_counter() - start)
  return len(host_batch['label']) / common.median(seconds[1:])


def pipeline_times(config: ml_collections.ConfigDict, source: Sequence, args: common.Args
                   ) -> tuple[dict[str, list[float]], dict]:
  """Seconds of `batches` batches of grain (per worker count) and tf.data, alternated; and one
  grain batch. Every stream is closed (grain's worker teardown prints errors otherwise)."""
  with contextlib.ExitStack() as stack:
    streams = {f'grain, {workers} workers': stack.enter_context(contextlib.closing(
        grain_stream(config, source, workers))) for workers in GRAIN_WORKERS}
    streams['tf.data'] = tf_train_dataset(config, source).as_numpy_iterator()
    times = alternate_timed(
        {key: lambda stream=stream: timed_batches(stream, args.batches, args.warmup)
         for key, stream in streams.items()}, args.repeats)
    return times, next(streams[f'grain, {GRAIN_WORKERS[0]} workers'])


def pipeline_vs_tfdata(args: common.Args, names: Sequence[str] = tuple(CASES)) -> list[dict]:
  """Images/s of grain (0 and 2 workers) and tf.data per case, and over the train step's."""
  rows = []
  for name, config in chosen_cases(args, names).items():
    source = sources.load(config.data, config.data.train_split)
    times, host_batch = pipeline_times(config, source, args)
    step_rate = step_images_per_second(config, host_batch, len(source.class_names),
                                       args.repeats)
    rates = {key: args.batches * config.batch_size / common.median(seconds)
             for key, seconds in times.items()}
    rows += [{'case': name, 'pipeline': key, 'batch_size': config.batch_size,
              'image_shape': list(host_batch['image'].shape[1:]), 'batches': args.batches,
              'images_per_second': round(rate, 1),
              'vs_tfdata': round(rate / rates['tf.data'], 2),
              'model': config.model.name, 'step_images_per_second': round(step_rate, 1),
              'pipeline_over_step': round(rate / step_rate, 2)}
             for key, rate in rates.items()]
  return rows


# The step's wait for data.


def cached_device_epoch(state, train_step: Callable, batch: dict, steps: int):
  """`steps` steps on one device batch, metrics read back one step late as `train.train_epoch`."""
  pending = None
  for _ in range(steps):
    state, metrics = train_step(state, batch)
    if pending is not None:
      jax.device_get(pending)
    pending = metrics
  jax.device_get(pending)
  return state


def never_pause(step: int, is_last_step: bool) -> bool:
  """`train_epoch`'s pause rule when nothing asks to stop."""
  del step, is_last_step
  return False


def step_waits(args: common.Args,
               names: Sequence[str] = ('cifar10', 'tiny64', 'cifar10_decoded', 'tiny64_decoded')
               ) -> list[dict]:
  """Seconds of `batches` steps of the training loop fed by the real pipeline, by one cached
  host batch and by one cached device batch (medians of alternated turns), and their ratios."""
  rows = []
  for name, config in chosen_cases(args, names).items():
    config = config.copy_and_resolve_references()
    config.steps_per_epoch = args.batches
    run = build.build(config)
    mesh, state, source = run.mesh, run.state, run.train_source
    with contextlib.closing(grain_stream(config, source)) as stream:
      host_batch = next(stream)
    train_step = parallel.compile_step(run.train_step, state, host_batch, mesh)
    device_batch = parallel.put_batch(host_batch, mesh)

    def through_loop(batches: Iterator[dict]) -> float:
      nonlocal state
      start = time.perf_counter()
      state, _ = train.train_epoch(state, train_step, batches, mesh, 0, args.batches, [], None,
                                   never_pause, None)
      return time.perf_counter() - start

    def real_pipeline() -> float:
      with contextlib.closing(grain_stream(config, source)) as stream:
        return through_loop(itertools.chain([next(stream)], stream))

    def cached_device() -> float:
      nonlocal state
      start = time.perf_counter()
      state = cached_device_epoch(state, train_step, device_batch, args.batches)
      return time.perf_counter() - start

    cached_device()  # warms the step
    times = alternate_timed({
        'real_pipeline': real_pipeline,
        'cached_host': lambda: through_loop(itertools.repeat(host_batch)),
        'cached_device': cached_device}, args.repeats)
    pipeline_seconds, host, device = (
        common.median(times[key]) for key in ('real_pipeline', 'cached_host', 'cached_device'))
    rows.append({'case': name, 'model': config.model.name, 'batch_size': config.batch_size,
                 'steps': args.batches, 'num_workers': config.data.num_workers,
                 'num_threads': config.data.num_threads,
                 'real_pipeline_seconds': round(pipeline_seconds, 3),
                 'cached_host_seconds': round(host, 3), 'cached_device_seconds': round(device, 3),
                 'pipeline_over_cached_device': round(pipeline_seconds / device, 3),
                 'pipeline_over_cached_host': round(pipeline_seconds / host, 3),
                 'within_5_percent': pipeline_seconds / device <= WAIT_GOAL})
  return rows
