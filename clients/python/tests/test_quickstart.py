"""The quickstart runs against a real daemon with the output the README promises, and
clients/python/README.md shows it verbatim."""

import os
import subprocess
import sys
from pathlib import Path

FILE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
README = FILE.parents[1] / "README.md"


def test_readme_shows_examples_quickstart_verbatim():
    block = "<!-- examples/quickstart.py -->\n```python\n" + FILE.read_text() + "```\n"
    assert block in README.read_text(), "update the README quickstart from examples/quickstart.py"


def test_the_quickstart_trips_the_breaker_after_two_failures(daemon):
    env = {**os.environ, "CBD_ENDPOINT": daemon.address}
    out = subprocess.run([sys.executable, str(FILE)], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.splitlines() == [
        "charged 4242",
        "failed: payment provider timed out",
        "failed: payment provider timed out",
        "rejected, retry in 30 s",
    ]
