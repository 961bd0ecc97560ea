"""WORKSPACE.md's Python code blocks run as written, so the guide cannot rot.

Each ```python block runs in a fresh interpreter from the repository root (a
reader may paste any one of them alone). Blocks that need the internet or
Colab are fenced ```python online and are only compiled (without their
notebook `!`/`%` lines).
"""

import re

import pytest

from helpers import REPO, run_python

BLOCK = re.compile(r'^```python( online)?\n(.*?)^```$', re.M | re.S)


def workspace_blocks() -> list[tuple[bool, str]]:
  """(runnable, code) of every Python block in WORKSPACE.md, in order."""
  return [(not online, code) for online, code in BLOCK.findall(
      (REPO / 'WORKSPACE.md').read_text())]


def test_workspace_has_runnable_blocks():
  assert sum(runnable for runnable, _ in workspace_blocks()) >= 4


@pytest.mark.parametrize('index', range(len(workspace_blocks())))
def test_workspace_block_runs(index):
  runnable, code = workspace_blocks()[index]
  python = '\n'.join(line for line in code.splitlines() if not line.startswith(('!', '%')))
  compile(python, f'WORKSPACE.md block {index}', 'exec')
  if not runnable:
    return
  result = run_python(code, timeout=300)
  assert result.returncode == 0, f'block {index}:\n{code}\n{result.stderr[-3000:]}'
