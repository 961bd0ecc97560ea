"""Progress off a terminal is whole lines, never carriage returns; on a terminal, tqdm."""

import io
import re

import tqdm

from tinyimagenet_jax import progress, train


class FakeTerminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_off_a_terminal_progress_is_plain_lines_on_schedule(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: now[0])
  out = io.StringIO()
  bar = progress.bar(total=9, initial=2, desc='epoch 1/3', unit='step', every_seconds=25, file=out)
  assert isinstance(bar, progress.PlainProgress)
  for _ in range(7):  # an update every 10 s: a line at 30 s and 60 s, and one at the end
    now[0] += 10
    bar.set_postfix(loss='0.5000', refresh=False)
    bar.update(1)
  bar.close()
  lines = out.getvalue().splitlines()
  assert '\r' not in out.getvalue()
  assert [re.match(r'epoch 1/3: (\d+)/9 step', line).group(1) for line in lines] == ['5', '8', '9']
  assert lines[-1] == 'epoch 1/3: 9/9 step (100%), 0.1 step/s, loss=0.5000'


def test_iterating_counts_every_item_and_ends_with_a_line():
  out = io.StringIO()
  items = list(progress.bar(range(5), total=5, desc='decoding', unit='img', file=out))
  assert items == list(range(5))
  assert out.getvalue().count('\n') == 1 and out.getvalue().startswith('decoding: 5/5 img (100%)')


def test_on_a_terminal_it_is_tqdm():
  bar = progress.bar(total=3, file=FakeTerminal())
  assert isinstance(bar, tqdm.tqdm)
  bar.close()


def test_a_run_logged_off_a_terminal_writes_no_carriage_return(digits_config, tmp_path, capfd):
  digits_config.num_epochs, digits_config.progress_bar = 1, True
  digits_config.progress_seconds = 0.0  # a line every step
  train.train_and_evaluate(digits_config, str(tmp_path))
  err = capfd.readouterr().err
  assert '\r' not in err
  lines = [line for line in err.splitlines() if line.startswith('epoch 1/1: ')]
  assert len(lines) == 1437 // 64  # one per step
