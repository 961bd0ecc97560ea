"""WORKSPACE.md's Python code blocks run as written, so the guide cannot rot.

Each ```python block runs in a fresh interpreter from a folder outside the
repository, as a notebook anywhere would (a reader may paste any one of them
alone); a ```python repo block runs from the repository root (the Colab
recipe's `%cd`). Blocks that need the internet or Colab are fenced
```python online and are only compiled (without their notebook `!`/`%` lines).
"""

import re
import subprocess
import sys

import pytest

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
