"""The text of `python launch.py --help`: the experiment configs, the command's flags, and
every config field with its value and the comment `config.base_config` gives it.

The comments are read from base_config's source, so they cannot drift from it: a
field's trailing comment, after the comment lines just above it (which often
introduce a group of fields).
"""

import ast
import inspect
import pathlib
import re

import ml_collections

from tinyimagenet_jax import config as config_lib

FIELD = re.compile(r'^\s*c\.([\w.]+)\s*=\s*(.*?)(?:\s+#\s*(.*))?$')


def field_comments() -> dict[str, str]:
  """{'data.placement': 'comment text', ...} for every field base_config sets."""
  comments, above = {}, []
  for line in inspect.getsource(config_lib.base_config).splitlines():
    stripped = line.strip()
    if stripped.startswith('#'):
      above.append(stripped.lstrip('#').strip())
      continue
    match = FIELD.match(line)
    if match and not match.group(2).startswith('ml_collections.ConfigDict('):
      comments[match.group(1)] = ' '.join(above + [match.group(3) or '']).strip()
    above = []
  return comments


def parse_value(text: str):
  """A --config.<key>=<text> override's value as Python reads it (a number, a tuple, a
  bool...), else the text itself (a name)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def flat_items(config: ml_collections.ConfigDict, prefix: str = '') -> list[tuple[str, object]]:
  """(dotted key, value) for every field of `config`, in its order."""
  items = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      items += flat_items(value, f'{prefix}{key}.')
    else:
      items.append((f'{prefix}{key}', value))
  return items


def config_listing(configs_dir: pathlib.Path) -> list[str]:
  """One line per experiment config file: its path and the first line of its docstring."""
  lines = []
  for path in sorted(configs_dir.glob('*.py')):
    if path.name.startswith('_'):
      continue
    doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    lines.append(f'  {path.relative_to(configs_dir.parent)}: {doc.splitlines()[0] if doc else ""}')
  return lines


def fields_text(config: ml_collections.ConfigDict) -> list[str]:
  """`  --config.<key>=<value>  <comment>` for every field of `config`."""
  comments = field_comments()
  rows = [(f'--config.{key}={value!r}', comments.get(key, '')) for key, value in
          flat_items(config)]
  width = min(max(len(flag) for flag, _ in rows), 48)
  return [f'  {flag:<{width}}  {comment}'.rstrip() for flag, comment in rows]


def help_text(program: str, flag_lines: list[str], configs_dir: pathlib.Path,
              config: ml_collections.ConfigDict | None = None, config_name: str = '') -> str:
  """The whole --help text: usage, flags, configs, and the fields of `config` (default:
  base_config's defaults)."""
  shown = config if config is not None else config_lib.base_config()
  title = (f'Config fields of {config_name} (override any with --config.<key>=<value>):'
           if config is not None else
           'Config fields and their defaults (override any with --config.<key>=<value>;'
           ' --config=<file> --help shows that file\'s values):')
  return '\n'.join([
      f'usage: {program} --config=<config file>[:<argument>] [--workdir=<folder>]'
      ' [--config.<key>=<value> ...]', '', 'Flags:', *flag_lines, '',
      'Experiment configs (append :smoke for a seconds-long offline run of an experiment):',
      *config_listing(configs_dir), '', title, *fields_text(shown), ''])
