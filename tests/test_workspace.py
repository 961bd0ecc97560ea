"""WORKSPACE.md's Python code blocks run as written, so the guide cannot rot.

Each ```python block runs in a fresh interpreter from a folder outside the
repository, as a notebook anywhere would (a reader may paste any one of them
alone); a ```python repo block runs from the repository root (the Colab
recipe's `%cd`). Blocks that need the internet or Colab are fenced
```python online and are only compiled (without their notebook `!`/`%` lines).
Every `--config.` flag the docs name is a field launch.py accepts.
"""

import re
import subprocess
import sys

import pytest

from tinyimagenet_jax import build

from helpers import REPO

BLOCK = re.compile(r'^```python( online| repo)?\n(.*?)^```$', re.M | re.S)


def workspace_blocks() -> list[tuple[str, str]]:
  """(kind, code) of every Python block in WORKSPACE.md, in order: kind '' (runs outside
  the repository), 'repo' (runs from its root) or 'online' (only compiled)."""
  return [(kind.strip(), code) for kind, code in BLOCK.findall(
      (REPO / 'WORKSPACE.md').read_text())]


def test_workspace_has_runnable_blocks():
  assert sum(kind != 'online' for kind, _ in workspace_blocks()) >= 4


@pytest.mark.parametrize('index', range(len(workspace_blocks())))
def test_workspace_block_runs(index, tmp_path):
  kind, code = workspace_blocks()[index]
  python = '\n'.join(line for line in code.splitlines() if not line.startswith(('!', '%')))
  compile(python, f'WORKSPACE.md block {index}', 'exec')
  if kind == 'online':
    return
  code = code.replace("'/tmp/", f"'{tmp_path}/")  # each run's workdirs start empty
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO if kind == 'repo' else tmp_path,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, f'block {index}:\n{code}\n{result.stderr[-3000:]}'


def documented_config_flags() -> set[str]:
  """Every `--config.<field>` the README, WORKSPACE.md and the configs' docstrings name."""
  texts = [REPO / 'README.md', REPO / 'WORKSPACE.md', *sorted((REPO / 'configs').glob('*.py'))]
  return {match for path in texts
          for match in re.findall(r'--config\.([a-z_0-9.]*[a-z_0-9])', path.read_text())}


def has_field(config, dotted: str) -> bool:
  """Whether `config` has the (dotted) field, as launch.py's `--config.` flags need."""
  for part in dotted.split('.'):
    if part not in config:
      return False
    config = config[part]
  return True


def test_every_documented_config_flag_is_a_field():
  configs = [build.load_config(str(path)) for path in sorted((REPO / 'configs').glob('*.py'))
             if path.name != '__init__.py']
  flags = documented_config_flags()
  assert 'compilation_cache_dir' in flags
  missing = sorted(flag for flag in flags if not any(has_field(c, flag) for c in configs))
  assert missing == []
