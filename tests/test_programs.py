"""Kept programs: loaded without tracing, equal to a fresh compile, keyed by what makes them."""

import uuid

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyimagenet_jax import build
from tinyimagenet_jax import evaluation
from tinyimagenet_jax import programs
from tinyimagenet_jax import steps
from tinyimagenet_jax import train
from tinyimagenet_jax import tuning
from tinyimagenet_jax.state import create_train_state


class Tiny(nn.Module):
  """A one-layer classifier, enough to give a TrainState functions in its static part."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


@pytest.fixture
def folder(tmp_path, monkeypatch):
  """Entries in a folder of the test's own."""
  monkeypatch.setattr(programs, 'folder', lambda: tmp_path)
  return tmp_path


@pytest.fixture
def salt() -> int:
  """A constant to put in a test's programs, so that JAX's persistent cache (shared by the
  session's tests) has never seen them: each compile is fresh, hence saved."""
  return uuid.uuid4().int % 100_000


def counted(fn, traces: list):
  """`fn`, appending to `traces` each time JAX traces it."""
  def wrapped(*args):
    traces.append(1)
    return fn(*args)
  return wrapped


def tiny_state():
  return create_train_state(Tiny(), optax.adam(1e-2), 0, (2, 2, 1))


def tiny_batch():
  images = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2, 1) / 16
  return {'image': jnp.asarray(images), 'label': jnp.asarray([0, 1, 2, 0])}


def test_a_kept_train_step_loads_without_tracing_and_steps_bitwise_alike(folder):
  traces = []
  kept = lambda: programs.Program(jax.jit(counted(steps.train_step, traces)), 'train_step',
                                  'context')
  fresh_state, fresh_metrics = kept()(tiny_state(), tiny_batch())
  assert len(traces) == 1 and len(list(folder.glob('*.bin'))) == 1
  second = tiny_state()
  loaded_state, loaded_metrics = kept()(second, tiny_batch())
  assert len(traces) == 1  # the second Program read the entry: nothing traced
  assert jax.tree.structure(loaded_state) == jax.tree.structure(second)
  for fresh, loaded in zip(jax.tree.leaves((fresh_state, fresh_metrics)),
                           jax.tree.leaves((loaded_state, loaded_metrics))):
    np.testing.assert_array_equal(np.asarray(fresh), np.asarray(loaded))
  # The output's static part is the caller's own, so the loaded state steps on.
  assert loaded_state.tx is second.tx and kept()(loaded_state, tiny_batch())[0].step == 2


def test_another_context_shape_or_static_argument_is_another_program(folder, salt):
  traces = []
  program = lambda context: programs.Program(
      jax.jit(counted(lambda x, n: x * n + salt - salt, traces), static_argnums=1), 'scale',
      context, static_argnums=(1,))
  ones = lambda size: jnp.ones(size, jnp.int32)
  assert program('a')(ones(3), 2).tolist() == [2, 2, 2]
  assert program('a')(ones(3), 2).tolist() == [2, 2, 2]
  assert len(traces) == 1
  program('b')(ones(3), 2)
  program('a')(ones(4), 2)
  assert program('a')(ones(3), 5).tolist() == [5, 5, 5]
  assert len(traces) == 4  # each traced: none found another's entry


def test_an_unreadable_entry_is_deleted_and_the_program_compiled_afresh(folder, salt):
  traces = []
  program = lambda: programs.Program(jax.jit(counted(lambda x: x + 1 + salt - salt, traces)),
                                     'add', 'c')
  zeros = jnp.zeros(2, jnp.int32)
  program()(zeros)
  (entry,) = folder.glob('*.bin')
  entry.write_bytes(b'torn')
  assert program()(zeros).tolist() == [1, 1]
  # Saved again unless JAX's own cache gave the executable (then made again when it no
  # longer does).
  assert len(traces) == 2 and (not entry.exists() or entry.read_bytes() != b'torn')
  assert program()(zeros).tolist() == [1, 1]


def test_without_a_context_nothing_is_kept(folder):
  traces = []
  program = lambda: programs.Program(jax.jit(counted(lambda x: x - 1, traces)), 'sub')
  program()(jnp.zeros(2))
  program()(jnp.zeros(2))
  assert len(traces) == 2 and not list(folder.glob('*'))


def test_an_output_with_functions_needs_them_among_the_known_nodes(folder):
  state = tiny_state()
  make = jax.jit(lambda: state)
  unknown = programs.Program(make, 'make', 'c')
  unknown()
  assert not list(folder.glob('*.bin'))  # kept in this process only: no way to rebuild it
  static_part = state.replace(step=None, params=None, batch_stats=None, opt_state=None, rng=None)
  programs.Program(make, 'make', 'c', known_outputs=static_part)()
  made = programs.Program(make, 'make', 'c', known_outputs=static_part)()
  assert len(list(folder.glob('*.bin'))) == 1 and made.tx is state.tx


def test_an_executable_from_jaxs_cache_is_noted(salt):
  """XLA:CPU cannot serialise an executable it deserialised: such ones are not saved."""
  tuning.use_compilation_cache()  # as every run does: even the smallest program is cached
  compile_now = lambda: jax.jit(lambda x: x * salt).lower(jnp.ones(2)).compile()
  assert programs.compiled_noting_cache_hits(compile_now)[1] is False
  assert programs.compiled_noting_cache_hits(compile_now)[1] is True


def test_a_model_from_outside_the_package_gets_no_context():
  assert build.defined_here(build.models.build_model(build.load_config('quickstart').model, 10))
  assert not build.defined_here(Tiny())


def test_tree_codec_round_trips_dicts_tuples_none_and_known_nodes():
  state = tiny_state()
  tree = ({'a': 1, 'b': (2, None, [3])}, state)
  treedef = jax.tree.structure(tree)
  known = programs.node_list(jax.tree.structure(state))
  encoded = programs.encode_tree(treedef, known)
  assert programs.decode_tree(encoded, known) == treedef


def test_two_contexts_with_one_program_share_its_executable(folder, salt):
  """A second config whose program is the same (JAX's cache may give it back, unsaveable)
  gets an entry naming the first's executable, and later loads without tracing."""
  traces = []
  program = lambda context: programs.Program(
      jax.jit(counted(lambda x: x * 3 + salt - salt, traces)), 'triple', context)
  ones = jnp.ones(2, jnp.int32)
  tuning.use_compilation_cache()
  program('a')(ones)
  program('b')(ones)
  assert program('b')(ones).tolist() == [3, 3]
  assert len(traces) == 2
  assert len(list(folder.glob('*.bin'))) == 2 and len(list(folder.glob('*.exe'))) == 1


def test_a_program_only_jaxs_cache_held_runs_from_it_unkept(folder, salt):
  """JAX's cache gives back an executable XLA:CPU cannot serialise again: it runs, and
  nothing is saved for it."""
  make = lambda: jax.jit(lambda x: x * 5 + salt - salt)
  ones = jnp.ones(2, jnp.int32)
  tuning.use_compilation_cache()
  make()(ones)  # an ordinary jit: only JAX's cache holds the program now
  assert programs.Program(make(), 'quintuple', 'a')(ones).tolist() == [5, 5]
  assert not list(folder.iterdir())


def ranks(x, unused):
  """A few kernels (sort, top-k, iota, a fusion): enough for XLA:CPU to lose some of them
  when it serialises an executable of a program it has deserialised."""
  del unused
  return jax.lax.top_k(x, 3)[1], jnp.argsort(x), jnp.arange(x.shape[0]) * 2


def test_no_executable_is_saved_for_a_program_this_process_deserialised(folder, salt,
                                                                       monkeypatch):
  """Programs that differ only in an unused argument's shape are one program to JAX's cache
  and to XLA, but have executables of their own here. Once the process has deserialised it
  (from JAX's cache, or from this folder), XLA:CPU's executables of it serialise without
  some kernels, from JAX's cache or compiled afresh: none is saved, and every program loaded
  or compiled later runs (the old code saved them, and this failed with 'Function ... not
  found')."""
  x = jnp.linspace(0, 1, 33 + salt % 7)[::-1]
  want = [(0, 1, 2), list(range(len(x)))[::-1], [0, 2, 4]]
  check = lambda out: [tuple(out[0].tolist()), out[1].tolist(), out[2][:3].tolist()] == want
  program = lambda width: programs.Program(jax.jit(ranks), 'ranks', f'width {width}')
  tuning.use_compilation_cache()
  for width in (1, 2, 3):  # 1 compiled afresh and saved; 2 and 3 from JAX's cache
    assert check(program(width)(x, jnp.zeros(width)))
  assert len(list(folder.glob('*.exe'))) == 1
  assert check(program(1)(x, jnp.zeros(1)))  # loaded from the folder
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    assert check(program(4)(x, jnp.zeros(4)))  # compiled afresh, after a deserialisation
  finally:
    jax.config.update('jax_enable_compilation_cache', True)
  assert len(list(folder.glob('*.exe'))) == 1
  for width in (1, 2, 3, 4):  # loaded where an entry exists, else compiled: all run
    assert check(program(width)(x, jnp.zeros(width)))


def test_a_program_that_cannot_be_saved_runs_unkept(folder, salt, monkeypatch):
  attempts = []

  def refuse(path, compiled):
    attempts.append(path)
    raise ValueError('not serialisable')

  monkeypatch.setattr(programs, 'save_executable', refuse)
  make = lambda: jax.jit(lambda x: x * 7 + salt - salt)
  ones = jnp.ones(2, jnp.int32)
  assert programs.Program(make(), 'septuple', 'a')(ones).tolist() == [7, 7]
  assert len(attempts) == 1 and not list(folder.iterdir())


def test_runs_that_differ_in_their_optimizer_evaluate_with_one_executable():
  """Evaluation reads no optimizer state, so without it the evaluation step of an SGD run and
  of an Adam run is one executable here (else the second run's would be one only JAX's cache
  held, traced again on every rerun)."""
  batch = {**tiny_batch(), 'mask': jnp.ones(4, bool)}

  def executable_name(tx, strip):
    state = create_train_state(Tiny(), tx, 0, (2, 2, 1))
    state = evaluation.without_optimizer(state) if strip else state
    text = jax.jit(steps.eval_step).lower(state, batch).as_text()
    return programs.disk_key('', text, None, (), (state, batch))

  assert executable_name(optax.sgd(0.1), True) == executable_name(optax.adam(1e-3), True)
  assert executable_name(optax.sgd(0.1), False) != executable_name(optax.adam(1e-3), False)


def compiled_quickly(options: dict) -> bool:
  """Whether XLA:CPU compiles with these options as `quick_compile` asks: the older fusion
  emitters, LLVM at -O1 or less (a run's initial state and the device path's epoch order
  always do)."""
  return (options.get('xla_cpu_use_fusion_emitters') is False
          and options.get('xla_backend_optimization_level', 3) <= 1)


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_a_quick_compile_run_compiles_every_program_so_and_trains_alike(
    digits_config, tmp_path, monkeypatch, placement):
  """`quick_compile` reaches every program a run makes (the smoke modes' compile time), and
  changes only how XLA compiles: the run trains as a default one does (to float rounding)."""
  made, original = [], programs.Program.__init__

  def recording(self, jitted, name, *args, **kwargs):
    made.append((name, kwargs.get('compiler_options') or {}))
    original(self, jitted, name, *args, **kwargs)

  monkeypatch.setattr(programs.Program, '__init__', recording)
  digits_config.data.placement = placement
  _, default = train.train_and_evaluate(digits_config, str(tmp_path / 'default'))
  assert [name for name, options in made if compiled_quickly(options)] == [
      'initial_state', *(['epoch_order'] if placement == 'device' else [])]
  made.clear()
  digits_config.quick_compile = True
  _, quick = train.train_and_evaluate(digits_config, str(tmp_path / 'quick'))
  assert len(made) >= 4  # the state, a train step or call, two evaluations
  assert [name for name, options in made if not compiled_quickly(options)] == []
  for one, other in zip(default, quick, strict=True):
    for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_top1'):
      np.testing.assert_allclose(one[key], other[key], rtol=1e-4, atol=1e-5)
