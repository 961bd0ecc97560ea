"""Tables as CSV (for programs) and Markdown (for reports), written side by side."""

import csv
import io
import os

import numpy as np

from tinyimagenet_jax import atomic


def table_columns(rows: list[dict]) -> list[str]:
  """Every key seen in `rows`, in first-seen order: the default columns."""
  return list(dict.fromkeys(key for row in rows for key in row))


def is_float(value) -> bool:
  """Whether `value` is a Python or numpy floating-point number."""
  return isinstance(value, (float, np.floating))


def cell_text(value) -> str:
  """Cell text: None empty, a tuple or list joined by '+', else str (floats round-trip)."""
  if value is None:
    return ''
  if isinstance(value, (tuple, list)):
    return '+'.join(str(item) for item in value)
  return str(value)


def markdown_cell(value, float_format: str) -> str:
  """A cell for a Markdown table: floats through `float_format`, pipes escaped."""
  text = format(float(value), float_format) if is_float(value) else cell_text(value)
  return text.replace('|', '\\|').replace('\n', ' ')


def markdown_table(rows: list[dict], columns: list[str], float_format: str = '.4f') -> str:
  """A GitHub-flavoured Markdown table of `rows` restricted to `columns`."""
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = (markdown_cell(row.get(column), float_format) for column in columns)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_table(rows: list[dict], path_without_suffix: str, columns: list[str] | None = None,
                float_format: str = '.4f') -> tuple[str, str]:
  """Writes `<path>.csv` (full precision) and `<path>.md` (floats via `float_format`).

  Columns default to every key seen, in first-seen order; a row missing a
  column gets an empty cell. Returns (csv path, md path).
  """
  columns = table_columns(rows) if columns is None else list(columns)
  csv_path, md_path = path_without_suffix + '.csv', path_without_suffix + '.md'
  os.makedirs(os.path.dirname(csv_path) or '.', exist_ok=True)
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(columns)
  writer.writerows([cell_text(row.get(column)) for column in columns] for row in rows)
  atomic.write_text(csv_path, text.getvalue())
  atomic.write_text(md_path, markdown_table(rows, columns, float_format))
  return csv_path, md_path
