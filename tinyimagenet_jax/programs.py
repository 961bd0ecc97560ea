"""Compiled programs kept across runs and processes, so a rerun skips tracing and lowering.

JAX's persistent compilation cache skips XLA's compile when a program comes back, but
JAX still traces the Python and lowers it to find the program: most of a warm smoke run
(WORKSPACE.md, "Programs kept whole"). A `Program` keeps the compiled executable itself,
in this process and in a folder beside JAX's cache: an entry (`<key>.bin`: the name of
its executable and its output tree) under a key made of everything that makes it, and
the executable (`<digest of the lowered program>.exe`), which runs that differ only in
what the program does not read (two configs' identical evaluation steps) share. The
key:

- the run's `context`: its config (less the fields no program reads, such as the seed,
  an argument) and the values derived from its data (steps per epoch, class count, input
  shape: `build.run_context`), which fix every Python value the traced functions close
  over;
- this package's source, the versions of JAX, jaxlib, Flax, Optax and numpy, JAX's
  settings, XLA_FLAGS, the backend and its devices;
- the program's name, compiler options and static arguments, and each argument's tree
  path, shape, dtype and sharding.

A Program without a context is an ordinary jitted function compiled ahead of time
(`build` gives none to a run whose model is defined outside this package: its source is
not in the key). Code patched at run time is not in the key either: a session that
patches the package's functions turns the cache off (JAX_ENABLE_COMPILATION_CACHE=false)
or points it elsewhere. An entry that cannot be read is deleted and the program compiled
afresh. The folder can be deleted at any time.

XLA:CPU cannot serialise a program's executable once this process has deserialised that
program (from this folder or from JAX's cache): neither that executable nor one compiled
afresh afterwards; the copy lacks kernels and fails to run in another process ("Function
... not found"). So an executable is saved only from a process that has not deserialised
its program (by lowered text: `DESERIALISED`); an entry may still name an executable
another process saved, and a program only JAX's cache held runs from there, unkept.
"""

from collections.abc import Callable, Sequence
import contextlib
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import pathlib
import pickle
import threading
from typing import Any

import jax
from jax.experimental import serialize_executable

from tinyimagenet_jax import atomic

FOLDER = 'tinyimagenet_jax_programs'  # inside JAX's compilation cache folder
KEPT_ENTRIES = 500  # the newest entries kept on disk; older ones are deleted on a write
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml_dtypes')
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
ENVIRONMENT_VARIABLES = ('XLA_FLAGS', 'LIBTPU_INIT_ARGS')
# JAX settings that cannot change a program (where its caches live, what it logs).
IGNORED_SETTING_WORDS = ('compilation_cache', 'persistent_cache', 'log', 'explain_cache',
                         'timeout')
# The folder's format: in every key, so a change leaves older entries and executables unread
# (format 1 could save executables that do not run: see the module doc).
FORMAT = 2
# The digests (`program_digest`) of the programs this process has deserialised.
DESERIALISED: set[str] = set()


@functools.cache
def source_digest() -> str:
  """SHA-256 of every Python file of this package (paths and contents)."""
  digest = hashlib.sha256()
  package = pathlib.Path(__file__).resolve().parent
  for path in sorted(package.rglob('*.py')):
    digest.update(str(path.relative_to(package)).encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()


@functools.cache
def library_versions() -> dict:
  """The installed versions of the libraries that trace, lower and compile."""
  return {name: importlib.metadata.version(name) for name in LIBRARIES}


def environment() -> dict:
  """What besides a program's own inputs and source decides what JAX and XLA make of it."""
  devices = jax.devices()
  return {
      'format': FORMAT,
      'libraries': library_versions(),
      'settings': {name: repr(value) for name, value in sorted(jax.config.values.items())
                   if not any(word in name for word in IGNORED_SETTING_WORDS)},
      'variables': {name: os.environ.get(name, '') for name in ENVIRONMENT_VARIABLES},
      'backend': [jax.default_backend(), devices[0].client.platform_version],
      'devices': [[d.id, d.device_kind, d.process_index] for d in devices],
      'process': [jax.process_index(), jax.process_count()],
  }


def sharding_description(sharding) -> list:
  """A sharding as text that names its devices (a sharding's repr does not)."""
  if sharding is None:
    return []
  mesh = getattr(sharding, 'mesh', None)
  devices = (mesh.device_ids.tolist() if mesh is not None
             else sorted(device.id for device in sharding.device_set))
  return [repr(sharding), devices]


def leaf_signature(leaf) -> tuple:
  """What a compiled program fixes about an argument leaf: an array's (or an abstract
  one's) shape, dtype, weak type and sharding; a Python scalar's type (a weakly typed
  scalar)."""
  if hasattr(leaf, 'shape') and hasattr(leaf, 'dtype'):
    return ('array', tuple(leaf.shape), str(leaf.dtype),
            bool(getattr(leaf, 'weak_type', False)), getattr(leaf, 'sharding', None))
  return (type(leaf).__name__, None)


def leaf_description(path, leaf) -> list:
  """`leaf_signature` as text, with the leaf's tree path."""
  *fixed, sharding = leaf_signature(leaf)
  return [jax.tree_util.keystr(path), *map(repr, fixed), sharding_description(sharding)]


def disk_key(name: str, context: Any, options: dict | None, static: tuple, args: tuple) -> str:
  """A file name: the digest of `context` (for an entry the run's context and the package's
  source, for an executable its lowered program), the program's name, options, static
  arguments and arguments, and the `environment`."""
  arguments = [leaf_description(path, leaf)
               for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]]
  text = json.dumps([name, context, options, repr(static), arguments, environment()],
                    sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def node_list(treedef) -> list:
  """The node data of `treedef`'s inner nodes, depth first."""
  data = treedef.node_data()
  if data is None:
    return []
  return [data] + [item for child in treedef.children() for item in node_list(child)]


def same_node(one: tuple, other: tuple) -> bool:
  """Whether two nodes' (type, data) are equal (data that cannot be compared are not)."""
  try:
    return one[0] is other[0] and bool(one[1] == other[1])
  except Exception:  # pylint: disable=broad-except
    return False


def encode_tree(treedef, known: Sequence) -> tuple:
  """`treedef` as picklable nested tuples. A node whose data is one of `known` (the
  arguments' nodes: a TrainState's, with its functions) is stored as that index."""
  data = treedef.node_data()
  if data is None:
    return ('leaf',)
  children = tuple(encode_tree(child, known) for child in treedef.children())
  for index, candidate in enumerate(known):
    if same_node(candidate, data):
      return ('known', index, children)
  return ('node', pickle.dumps(data), children)


def decode_tree(encoded: tuple, known: Sequence):
  """The treedef `encode_tree` stored, its known nodes taken from `known`."""
  if encoded[0] == 'leaf':
    return jax.tree.structure(0)
  data = known[encoded[1]] if encoded[0] == 'known' else pickle.loads(encoded[1])
  children = [decode_tree(child, known) for child in encoded[2]]
  return type(jax.tree.structure(0)).from_node_data_and_children(
      jax.tree_util.default_registry, data, children)


def compiled_noting_cache_hits(compile_now: Callable) -> tuple[Any, bool]:
  """(`compile_now()`, whether JAX's persistent cache gave any of it: a hit in this thread;
  other threads, an asynchronous checkpoint's, compile programs of their own)."""
  hits, thread = [], threading.get_ident()

  def listener(event: str, **_) -> None:
    if event == CACHE_HIT_EVENT and threading.get_ident() == thread:
      hits.append(event)

  jax.monitoring.register_event_listener(listener)
  try:
    return compile_now(), bool(hits)
  finally:
    jax.monitoring.unregister_event_listener(listener)


def folder() -> pathlib.Path | None:
  """Where entries live: beside JAX's persistent compilation cache, when it is on, in a
  one-process run (other processes of a run receive executables serialised by the first,
  which XLA:CPU cannot serialise again)."""
  cache = jax.config.jax_compilation_cache_dir
  if not (jax.config.jax_enable_compilation_cache and cache) or jax.process_count() > 1:
    return None
  return pathlib.Path(cache).expanduser() / FOLDER


def write_pruned(path: pathlib.Path, data: bytes) -> None:
  """Writes `data` to `path` whole or not at all; keeps the newest KEPT_ENTRIES files of its
  kind (suffix) in its folder."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic.replaced_file(path) as temporary:
    temporary.write_bytes(data)
  kept = sorted(path.parent.glob('*' + path.suffix), key=lambda entry: entry.stat().st_mtime)
  for old in kept[:-KEPT_ENTRIES]:
    old.unlink(missing_ok=True)


def save_executable(path: pathlib.Path, compiled) -> None:
  """Writes the executable of `compiled` (without its trees) to `path`."""
  write_pruned(path, serialize_executable.serialize(compiled)[0])


def program_digest(lowered_text: str) -> str:
  """A program's identity as XLA sees it: its lowered text, without its unused arguments'
  shapes (two programs that differ only there are one to JAX's cache and to XLA)."""
  return hashlib.sha256(lowered_text.encode()).hexdigest()


def save_entry(path: pathlib.Path, executable: pathlib.Path, out_tree, known: Sequence,
               program: str) -> None:
  """Writes a program's entry: the name of its executable's file, its output tree and its
  `program_digest`."""
  write_pruned(path, pickle.dumps((executable.name, encode_tree(out_tree, known), program)))


def load(path: pathlib.Path, in_tree, known: Sequence):
  """The compiled program of the entry at `path`, for arguments of tree `in_tree` (its
  program noted in DESERIALISED)."""
  with io.open(path, 'rb') as file:
    executable, out_tree, program = pickle.load(file)
  payload = (path.parent / executable).read_bytes()
  compiled = serialize_executable.deserialize_and_load(payload, in_tree,
                                                       decode_tree(out_tree, known))
  DESERIALISED.add(program)
  return compiled


class Program:
  """`jitted` compiled once per argument signature, kept whole when given a `context`.

  `compile(*args)` gives the compiled program for these arguments (static ones at
  `static_argnums` included); calling the Program compiles when needed and runs it. The
  output tree is stored by its nodes; one that holds functions must be a node of the
  arguments or of `known_outputs` (a tree with the same node, e.g. a TrainState holding
  the run's model and optimizer).
  """

  def __init__(self, jitted: Callable, name: str, context: str | None = None,
               static_argnums: Sequence[int] = (), compiler_options: dict | None = None,
               known_outputs: Any = None):
    self.jitted, self.name, self.context = jitted, name, context
    self.static_argnums, self.compiler_options = tuple(static_argnums), compiler_options
    self.known_outputs = ([] if known_outputs is None
                          else node_list(jax.tree.structure(known_outputs)))
    self.compiled: dict[Any, Any] = {}

  def split(self, args: tuple) -> tuple[tuple, tuple]:
    """(static arguments, dynamic arguments)."""
    return (tuple(args[i] for i in self.static_argnums),
            tuple(arg for i, arg in enumerate(args) if i not in self.static_argnums))

  def compile(self, *args):
    """The compiled program for `args`: from this process, else from disk, else compiled."""
    static, dynamic = self.split(args)
    leaves, treedef = jax.tree.flatten(dynamic)
    signature = (static, treedef, tuple(leaf_signature(leaf) for leaf in leaves))
    if signature not in self.compiled:
      self.compiled[signature] = self.load_or_compile(args, static, dynamic)
    return self.compiled[signature]

  def load_or_compile(self, args: tuple, static: tuple, dynamic: tuple):
    """The program from its disk entry when there is one; else traced, lowered and compiled
    now (and saved, when it has a context)."""
    where = folder() if self.context is not None else None
    if where is None:
      return self.jitted.lower(*args).compile(compiler_options=self.compiler_options)
    path = where / (disk_key(self.name, [self.context, source_digest()], self.compiler_options,
                             static, dynamic) + '.bin')
    in_tree = jax.tree.structure((dynamic, {}))
    known = node_list(in_tree) + self.known_outputs
    if path.exists():
      try:
        return load(path, in_tree, known)
      except Exception:  # pylint: disable=broad-except
        path.unlink(missing_ok=True)  # unreadable (a different jaxlib, a torn file): remade
    lowered = self.jitted.lower(*args)
    text = lowered.as_text()
    program = program_digest(text)
    # Named by the lowered program and the arguments, not the source: an edit that leaves a
    # program as it was finds its executable.
    executable = where / (disk_key('', text, self.compiler_options, static, dynamic) + '.exe')
    compiled, loaded = compiled_noting_cache_hits(
        lambda: lowered.compile(compiler_options=self.compiler_options))
    if loaded:
      DESERIALISED.add(program)
    # One that cannot be serialised (a closed-over constant, a CPU thunk without a
    # serialiser) runs unkept.
    with contextlib.suppress(Exception):
      if program not in DESERIALISED:
        save_executable(executable, compiled)
      if executable.exists():  # saved now, or by another process: an entry names it
        save_entry(path, executable, compiled.out_tree, known, program)
    return compiled

  def __call__(self, *args):
    """Runs the program compiled for `args` on their dynamic part."""
    return self.compile(*args)(*self.split(args)[1])
