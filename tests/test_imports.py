"""Importing the package changes nothing in the process, and its modules import no cycle.

The import graph reads every import statement with `ast`, those inside functions
included. `import a.b.c` and `from a.b import c` run a, a.b and a.b.c: each is an
edge, except the packages the importing module is inside, which are running
already when it runs (so a package's __init__ importing its own modules is no
cycle). A name taken from a package (`from a.b import NAME`) is an edge to it.
"""

import ast
from collections.abc import Iterator
import json
import pathlib

from helpers import REPO, run_python

PACKAGE = 'tinyimagenet_jax'


def package_modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Every module of the package in folder `root`, by dotted name (a package by its own)."""
  modules = {}
  for path in sorted(root.rglob('*.py')):
    parts = path.relative_to(root.parent).with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return modules


def from_base(node: ast.ImportFrom, module: str, path: pathlib.Path) -> str:
  """The absolute module a `from ... import` in `module` (at `path`) takes its names from."""
  if not node.level:
    return node.module
  package = module if path.name == '__init__.py' else module.rpartition('.')[0]
  package = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
  return f'{package}.{node.module}' if node.module else package


def named_modules(node: ast.Import | ast.ImportFrom, module: str, path: pathlib.Path,
                  modules) -> list[str]:
  """What an import statement names: each module, or the module a name is taken from."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  base = from_base(node, module, path)
  return [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
          for alias in node.names]


def import_targets(node: ast.Import | ast.ImportFrom, module: str, path: pathlib.Path,
                   modules) -> set[str]:
  """The package modules an import statement in `module` runs: those it names, and the
  packages above them, except the packages `module` is inside (running already)."""
  targets = set()
  for name in named_modules(node, module, path, modules):
    parts = name.split('.')
    for end in range(1, len(parts) + 1):
      prefix = '.'.join(parts[:end])
      inside = module.startswith(prefix + '.')
      if prefix in modules and prefix != module and (end == len(parts) or not inside):
        targets.add(prefix)
  return targets


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
  """Module -> the package modules it imports anywhere in its file, functions included."""
  modules = package_modules(root)
  return {module: set().union(*(
      import_targets(node, module, path, modules) for node in ast.walk(ast.parse(path.read_text()))
      if isinstance(node, (ast.Import, ast.ImportFrom)))) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One import cycle as [a, b, ..., a], or [] when there is none (depth-first search)."""
  done, path = set(), []

  def visit(module: str) -> list[str]:
    path.append(module)
    for target in sorted(graph[module]):
      if target in path:
        return path[path.index(target):] + [target]
      if target not in done and (cycle := visit(target)):
        return cycle
    done.add(path.pop())
    return []

  for module in sorted(graph):
    if module not in done and (cycle := visit(module)):
      return cycle
  return []


def test_the_package_imports_no_cycle():
  cycle = find_cycle(import_graph(REPO / PACKAGE))
  assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def write_package(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  """A package folder `root` holding `files` (relative path -> source)."""
  for name, source in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(source)
  return root


def test_cycles_through_functions_and_relative_imports_are_found(tmp_path):
  root = write_package(tmp_path / 'pkg', {
      '__init__.py': '', 'a.py': 'from pkg import b\n',
      'b.py': 'def f():\n  from . import a\n'})
  assert find_cycle(import_graph(root)) == ['pkg.a', 'pkg.b', 'pkg.a']


def test_a_package_init_importing_its_modules_is_no_cycle_but_its_names_are(tmp_path):
  files = {'__init__.py': '', 'sub/__init__.py': 'from pkg.sub import c\nNAME = 1\n',
           'sub/c.py': 'from pkg.sub import d\n', 'sub/d.py': ''}
  assert find_cycle(import_graph(write_package(tmp_path / 'plain' / 'pkg', files))) == []
  files['sub/d.py'] = 'from pkg.sub import NAME\n'
  assert find_cycle(import_graph(write_package(tmp_path / 'named' / 'pkg', files))) == [
      'pkg.sub', 'pkg.sub.c', 'pkg.sub.d', 'pkg.sub']


def run_at_import(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
  """The import statements a module runs when imported: all but those inside functions."""
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      yield from run_at_import(node)


def absolute_names(node: ast.Import | ast.ImportFrom) -> list[str]:
  """The modules an absolute import may load: each name; for `from a import b`, a and a.b."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if node.level:
    return []
  return [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]


def third_party_imports(root: pathlib.Path) -> list[str]:
  """The other libraries' modules (or names that may be modules) the package imports when
  imported, sorted."""
  return sorted({name for path in package_modules(root).values()
                 for node in run_at_import(ast.parse(path.read_text()))
                 for name in absolute_names(node) if name.split('.')[0] != PACKAGE})


def is_program(path: pathlib.Path) -> bool:
  """Whether a module is a `python -m` program, which may define its absl flags."""
  return path.stem == '__main__' or "if __name__ == '__main__':" in path.read_text()


# Run in a fresh interpreter with argv [libraries, package modules]: imports the other
# libraries first (their own side effects are theirs), then every package module, and
# prints what importing the package changed in the process.
IMPORT_EVERYTHING = '''
import importlib, json, os, signal, sys
from absl import flags
import jax
import threadpoolctl

libraries, package = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in libraries:
  try:
    importlib.import_module(name)
  except ImportError:
    pass

def settings():
  return {'environ': dict(os.environ), 'jax_config': repr(sorted(jax.config.values.items())),
          'signals': [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]}

def threads():
  return {info['filepath']: info['num_threads'] for info in threadpoolctl.threadpool_info()}

before, threads_before = settings(), threads()
skipped, flag_modules = [], {}
for name in package:
  known = set(flags.FLAGS)
  try:
    importlib.import_module(name)
  except ModuleNotFoundError as error:
    if (error.name or '').startswith('tinyimagenet_jax'):
      raise
    skipped.append(name)
  defined = sorted(set(flags.FLAGS) - known)
  if defined:
    flag_modules[name] = defined
  for flag in defined:  # a program's own flags, so the next program can define its own
    delattr(flags.FLAGS, flag)
after, threads_after = settings(), threads()
print(json.dumps({
    'changed': sorted(key for key in before if before[key] != after[key]),
    'environ': sorted(set(before['environ'].items()) ^ set(after['environ'].items())),
    'threads': {path: (count, threads_after.get(path)) for path, count in threads_before.items()
                if threads_after.get(path) != count},
    'skipped': skipped, 'flag_modules': flag_modules}))
'''


def test_importing_every_module_changes_nothing_in_the_process():
  root = REPO / PACKAGE
  modules = package_modules(root)
  result = run_python(IMPORT_EVERYTHING, json.dumps(third_party_imports(root)),
                      json.dumps(sorted(modules)), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['changed'] == [], report
  assert report['threads'] == {}, report
  assert set(report['skipped']) <= {f'{PACKAGE}.bench.torch_models',
                                    f'{PACKAGE}.bench.keras_models'}, report
  assert [name for name in report['flag_modules'] if not is_program(modules[name])] == [], report


def test_third_party_imports_skip_the_package_and_function_bodies():
  names = third_party_imports(REPO / PACKAGE)
  assert {'jax', 'ml_collections', 'torch'} <= set(names)
  assert 'keras' not in names  # bench.keras_models imports it inside a function
  assert not any(name.startswith(PACKAGE) for name in names)


def test_the_training_path_imports_no_plotting_or_other_framework():
  """launch.py's run, the train loop and evaluation leave matplotlib to the first figure,
  grain to the host path and h5py to the Keras weights it reads, and never import
  TensorFlow or PyTorch: a short run does not pay for what it does not use."""
  result = run_python(
      'import sys, json, launch\n'
      'from tinyimagenet_jax import build, checkpoint, evaluation, train\n'
      'print(json.dumps(sorted(name for name in'
      " ('matplotlib', 'grain', 'h5py', 'tensorflow', 'torch') if name in sys.modules)))")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == '[]'
