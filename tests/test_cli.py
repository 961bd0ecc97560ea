"""Every command-line entry point tells a user's mistake in one line and exits with status 2."""

import os
import subprocess
import sys

from PIL import Image
import pytest

from tinyimagenet_jax import cli

from helpers import REPO

EXPORT = ('-m', 'tinyimagenet_jax.data.tiny_imagenet.export')
PREVIEW = ('-m', 'tinyimagenet_jax.data.preview')
SUMMARY = ('-m', 'tinyimagenet_jax.models.summary')
BENCH = ('-m', 'tinyimagenet_jax.bench')

# (command, its flags with {tmp} for a scratch folder, words the error line must hold)
MISTAKES = {
    'export split not numbers': (EXPORT, ('--archive={tmp}/a.zip', '--out={tmp}/out',
                                          '--num_classes=5', '--split=200,fifty,50'),
                                 '--split=200,fifty,50 must be three whole numbers'),
    'export seed not a number': (EXPORT, ('--archive={tmp}/a.zip', '--out={tmp}/out',
                                          '--num_classes=5', '--seed=abc'), '--seed'),
    'export out missing': (EXPORT, ('--archive={tmp}/a.zip', '--config=subset100'), '--out'),
    'export config and num_classes': (EXPORT, ('--archive={tmp}/a.zip', '--out={tmp}/out',
                                               '--config=subset100', '--num_classes=5'),
                                      'either --config or --num_classes'),
    'export out is a file': (EXPORT, ('--archive={tmp}/a.zip', '--out={tmp}/file.txt',
                                      '--config=subset100'), 'is a file'),
    'export positional argument': (EXPORT, ('--archive={tmp}/a.zip', '--out={tmp}/out',
                                            '--config=subset100', 'extra'),
                                   "unexpected arguments 'extra'"),
    'preview image missing': (PREVIEW, ('--image={tmp}/none.png', '--out={tmp}/grid.png'),
                              'is not a file'),
    'preview not an image': (PREVIEW, ('--image={tmp}/file.txt', '--out={tmp}/grid.png'),
                             'cannot be read as an image'),
    'preview output folder missing': (PREVIEW, ('--image={tmp}/pixel.png',
                                                '--out={tmp}/nowhere/grid.png'),
                                      'does not exist'),
    'preview flag unknown': (PREVIEW, ('--image={tmp}/pixel.png', '--out={tmp}/grid.png',
                                       '--sise=3'), 'sise'),
    'summary config missing': (SUMMARY, ('--image_size=32',), '--config'),
    'summary model unknown': (SUMMARY, ('--config=configs/quickstart.py',
                                        '--config.model.name=resnet9000'), 'resnet9000'),
    'bench what unknown': (BENCH, ('--what=everything',), 'everything'),
    'bench repeats not a number': (BENCH, ('--repeats=many',), '--repeats'),
}


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
  """A folder holding a text file and a one-pixel PNG."""
  folder = tmp_path_factory.mktemp('cli')
  (folder / 'file.txt').write_text('not an image\n')
  Image.new('RGB', (1, 1)).save(folder / 'pixel.png')
  return folder


@pytest.mark.parametrize('case', sorted(MISTAKES))
def test_a_mistake_is_one_line_and_status_2(case, scratch):
  command, flags, words = MISTAKES[case]
  result = subprocess.run([sys.executable, *command, *(f.format(tmp=scratch) for f in flags)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == cli.USAGE_ERROR, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert words in lines[0]
  assert not (scratch / 'out').exists() and not (scratch / 'grid.png').exists()


def test_help_still_exits_0():
  result = subprocess.run([sys.executable, *PREVIEW, '--help'], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0 and '--image' in result.stdout


ENDING = """
import atexit, pathlib, sys, threading, time
from tinyimagenet_jax import cli
out = pathlib.Path(sys.argv[1])
atexit.register(lambda: (out / 'atexit').write_text('ran'))
if sys.argv[2] == 'worker':
  def work():
    time.sleep(0.5)
    (out / 'worker').write_text('done')
  threading.Thread(target=work).start()
print('the whole line, buffered in a pipe')
cli.exit_without_teardown(3)
"""


@pytest.mark.parametrize('how', ['worker', 'alone', 'profiled'])
def test_a_command_ends_with_its_status_its_output_and_its_atexit_handlers(how, tmp_path):
  """Skipping the interpreter's teardown loses nothing: the status, the buffered output, the
  atexit handlers' work, a running non-daemon thread's work and a profiler's output arrive."""
  script = tmp_path / 'command.py'
  script.write_text(ENDING)
  profiler = ('-m', 'cProfile', '-o', str(tmp_path / 'profile')) if how == 'profiled' else ()
  result = subprocess.run([sys.executable, *profiler, str(script), str(tmp_path), how],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, 'PYTHONPATH': str(REPO)})
  # cProfile's own main ends with status 0 whatever the program's
  assert result.returncode == (0 if profiler else 3), result.stderr[-2000:]
  assert result.stdout == 'the whole line, buffered in a pipe\n'
  assert (tmp_path / 'atexit').read_text() == 'ran'
  assert (tmp_path / 'worker').exists() == (how == 'worker')
  assert (tmp_path / 'profile').exists() == (how == 'profiled')
