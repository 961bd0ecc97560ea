"""The benchmark command: `python -m tinyimagenet_jax.bench --what=...` (see the package doc)."""

from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from tinyimagenet_jax import cli
from tinyimagenet_jax import tuning
from tinyimagenet_jax.bench import (common, device_input, io, members, memory,
                                    pipeline_vs_tfdata, plan, scaling, small_maps,
                                    time_to_result, train_step)

BENCHMARKS: dict[str, Callable[[common.Args], list[dict]]] = {
    'pipeline': io.pipeline_throughput,
    'checkpoint': io.checkpoint_cost,
    'pipeline_vs_tfdata': pipeline_vs_tfdata.pipeline_vs_tfdata,
    'step_waits': pipeline_vs_tfdata.step_waits,
    'memory': memory.memory_over_epochs,
    'scaling': scaling.scaling,
    'train_step': train_step.train_step_speed,
    'members': members.members_speed,
    'time_to_result': time_to_result.time_to_result,
    'plan': plan.plan,
    'device_input': device_input.device_input,
    'device_step_waits': device_input.device_step_waits,
    'steps_per_call': device_input.steps_per_call,
    'augment_apart': device_input.augment_apart,
    'small_maps': small_maps.small_maps,
}

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config to measure, where one is needed.')
_WHAT = flags.DEFINE_enum('what', 'pipeline', list(BENCHMARKS), 'What to measure.')
_BATCHES = flags.DEFINE_integer('batches', 100, 'Batches (or steps) to time.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Batches (or steps) run before timing.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Alternations of side-by-side contenders.')
_MODELS = flags.DEFINE_list(
    'models', [], 'Models (pipeline benchmarks: cases) to measure, where the benchmark takes a list.')
_JSON = flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.')


def main(argv: list[str]) -> None:
  del argv  # cli.parse_flags refused positional arguments
  tuning.apply()  # before anything starts JAX's backends
  args = common.Args(config=_CONFIG.value, batches=_BATCHES.value, warmup=_WARMUP.value,
                     repeats=_REPEATS.value, models=tuple(_MODELS.value))
  rows = BENCHMARKS[_WHAT.value](args)
  print(common.format_table(rows))
  if _JSON.value:
    common.write_json(rows, _JSON.value)


if __name__ == '__main__':
  cli.run(main)
