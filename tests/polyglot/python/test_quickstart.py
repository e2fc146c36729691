"""The README's Python quickstart runs as written against a real daemon, and the
README shows exactly this file."""

import os
import subprocess
import sys

from conftest import HERE, REPO


def test_the_quickstart_runs_against_a_daemon(daemon, pb):
    env = dict(os.environ, CBD_ENDPOINT=daemon.address,
               PYTHONPATH=os.pathsep.join([str(pb.out_dir), str(HERE)]))
    run = subprocess.run([sys.executable, "quickstart.py"], cwd=HERE, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "charged 4242",
        "failed: payment provider timed out",
        "failed: payment provider timed out",
        "payments are STATE_OPEN, retry in 30 s",
        "1 payments.charge STATE_CLOSED spec put",
        "2 payments.charge STATE_OPEN 2 consecutive failures",
    ], run.stdout


def test_the_readme_shows_this_file():
    readme = (REPO / "README.md").read_text()
    marker = "<!-- tests/polyglot/python/quickstart.py -->\n```python\n"
    assert marker in readme, "the README's Python block is marked"
    block = readme.split(marker, 1)[1].split("```\n", 1)[0]
    assert block == (HERE / "quickstart.py").read_text()
