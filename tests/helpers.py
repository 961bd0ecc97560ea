"""Helpers for tests: the real data beside the repo, fresh interpreters."""

import csv
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def shared_archive(name: str) -> pathlib.Path:
  """The path of an archive in ../shared/data, or a skip that says it is absent."""
  path = SHARED_DATA / name
  if not path.exists():
    pytest.skip(f'real data {path} is absent (it ships beside the repo in CI only)')
  return path


def run_python(code: str, *args: str, env: dict | None = None, timeout: int = 600):
  """Runs Python code in a fresh interpreter from the repo root."""
  return subprocess.run(
      [sys.executable, '-c', code, *args], cwd=REPO, capture_output=True, text=True,
      timeout=timeout, env={**os.environ, **(env or {})})


def run_launch(*args: str, timeout: int = 600):
  """Runs launch.py with `args` in a fresh interpreter from the repo root."""
  return subprocess.run(
      [sys.executable, 'launch.py', *args], cwd=REPO, capture_output=True, text=True,
      timeout=timeout)


def read_csv(path) -> list[dict]:
  """A CSV table's rows as dicts of strings (the experiments' and exports' tables)."""
  with open(path, newline='') as file:
    return list(csv.DictReader(file))
