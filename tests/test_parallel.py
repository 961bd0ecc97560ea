"""The same global batch gives the same step on 8 simulated CPU devices as on 1."""

import json

import numpy as np

from tinyimagenet_jax import train

from helpers import run_python

EIGHT_DEVICE_STEPS = '''
import jax
jax.config.update('jax_num_cpu_devices', 8)
import ml_collections, numpy as np, optax
from tinyimagenet_jax import models, parallel, state, steps

model = models.build_model(
    ml_collections.ConfigDict({'name': 'conv4', 'filters': (8, 16, 16, 16), 'hidden': 32}), 10)

def run(devices):
  mesh = parallel.make_mesh(devices)
  train_state = parallel.put_replicated(
      state.create_train_state(model, optax.sgd(0.1, momentum=0.9), 0, (16, 16, 3)), mesh)
  step = parallel.jit_train_step(mesh)
  rng = np.random.default_rng(0)
  host_batch = {'image': rng.random((32, 16, 16, 3), dtype=np.float32),
                'label': rng.integers(0, 10, 32).astype(np.int32)}
  losses = []
  for _ in range(3):
    batch = parallel.put_batch(host_batch, mesh)
    assert [s.data.shape[0] for s in batch['image'].addressable_shards] == [32 // len(devices)] * len(devices)
    train_state, metrics = step(train_state, batch)
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(train_state.params)

assert jax.device_count() == 8
losses8, params8 = run(jax.devices())
losses1, params1 = run(jax.devices()[:1])
np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params8, params1)
assert losses8[2] < losses8[0]
print('EQUAL', losses8)
'''


def test_train_step_on_8_devices_equals_1_device():
  result = run_python(EIGHT_DEVICE_STEPS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'EQUAL' in result.stdout


TRAIN_ON_8_DEVICES = '''
import sys, json
import jax
jax.config.update('jax_num_cpu_devices', 8)
from absl import flags
flags.FLAGS.mark_as_parsed()
from tinyimagenet_jax import config as config_lib, train
config = config_lib.base_config()
config.update_from_flattened_dict(json.loads(sys.argv[1]))
_, history = train.train_and_evaluate(config, sys.argv[2])
print(json.dumps(history))
'''


def test_train_and_evaluate_on_8_devices_matches_1_device(digits_config, tmp_path):
  digits_config.num_epochs = 1
  flat = {key: value for key, value in digits_config.to_dict().items()}
  overrides = {f'{section}.{key}': value for section, fields in flat.items()
               if isinstance(fields, dict) for key, value in fields.items()}
  overrides.update({key: value for key, value in flat.items() if not isinstance(value, dict)})
  result = run_python(TRAIN_ON_8_DEVICES, json.dumps(overrides), str(tmp_path / 'eight'))
  assert result.returncode == 0, result.stderr[-3000:]
  eight = json.loads(result.stdout.strip().splitlines()[-1])
  _, one = train.train_and_evaluate(digits_config, str(tmp_path / 'one'))
  for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1', 'test_top5'):
    np.testing.assert_allclose(eight[0][key], one[0][key], rtol=1e-4, atol=1e-6, err_msg=key)
