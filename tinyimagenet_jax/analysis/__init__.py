"""Analysis of trained models and runs: curves, tables, per-class metrics, ensembles, filters, t-SNE."""

import importlib
import threading


def new_figure(**options):
  """A matplotlib `Figure(**options)`, without pyplot. matplotlib is imported at the first
  figure, not with the modules that draw them: a run that writes no figure (write_plots
  False, a test, a notebook step) skips its half-second import."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(**options)


def import_in_background() -> threading.Thread:
  """Starts importing matplotlib's Figure in a daemon thread and returns the thread. A run
  that will draw figures calls it as its steps start: the import's Python runs beside
  XLA's work instead of after it (the quickstart ended 0.2 s sooner, medians of 11
  alternated runs, WORKSPACE.md). An import that fails raises again at the first figure."""
  thread = threading.Thread(target=importlib.import_module, args=('matplotlib.figure',),
                            name='import matplotlib', daemon=True)
  thread.start()
  return thread


def integer_ticks(axis) -> None:
  """Whole numbers only on `axis`'s x axis (epochs, steps)."""
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
