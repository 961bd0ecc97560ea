"""Analysis of trained models and runs: curves, tables, per-class metrics, ensembles, filters, t-SNE."""


def new_figure(**options):
  """A matplotlib `Figure(**options)`, without pyplot. matplotlib is imported at the first
  figure, not with the modules that draw them: a run that writes no figure (write_plots
  False, a test, a notebook step) skips its half-second import."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(**options)


def integer_ticks(axis) -> None:
  """Whole numbers only on `axis`'s x axis (epochs, steps)."""
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
