"""The command line: the README's main command, and README/CI agreement."""

import json
import re

from helpers import REPO, run_launch


def readme_commands() -> list[str]:
  return re.findall(r'```bash\n(.*?)\n```', (REPO / 'README.md').read_text(), re.S)[:2]


def test_readme_opens_with_install_and_run_then_install_and_test():
  main, tests = readme_commands()
  assert 'pip install -e .' in main and 'launch.py --config=configs/quickstart.py' in main
  assert "pip install -e '.[test]'" in tests and 'pytest' in tests


def test_ci_runs_the_readme_test_command():
  assert readme_commands()[1] in (REPO / '.ci' / 'run').read_text().splitlines()


def test_quickstart_command_trains_and_reports(tmp_path):
  result = run_launch('--config=configs/quickstart.py', '--config.num_epochs=2',
                      '--config.progress_bar=False', f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'Finished after 2 epochs; last epoch: train error [\d.]+, test top-1 [\d.]+',
                   result.stdout)
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 2
  assert json.loads((tmp_path / 'config.json').read_text())['data']['name'] == 'digits'
  assert 'Compiled the train step' in result.stdout
