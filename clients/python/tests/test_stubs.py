"""The checked-in stubs under src/cbd_client/_pb are exactly what gen_stubs.py makes
from the repo's proto/proto today: a proto change without regenerating fails here."""

import filecmp
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
CHECKED_IN = PACKAGE / "src" / "cbd_client" / "_pb"
FIX = "run `python clients/python/gen_stubs.py` (in clients/python/.venv) and commit src/cbd_client/_pb"


def files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_checked_in_stubs_match_a_fresh_generation(tmp_path):
    out = tmp_path / "_pb"
    subprocess.run([sys.executable, str(PACKAGE / "gen_stubs.py"), str(out)], check=True)
    assert files(out) == files(CHECKED_IN), f"the stub file list changed: {FIX}"
    stale = [f for f in files(out) if not filecmp.cmp(out / f, CHECKED_IN / f, shallow=False)]
    assert stale == [], f"stale stubs {stale}: {FIX}"


def test_stubs_import_inside_the_package_only():
    # gen_stubs.py rewrites protoc's absolute imports; no stub may import a top-level
    # `cbd` or `google.rpc` (they would shadow or clash with other distributions).
    for f in files(CHECKED_IN):
        if f.endswith(".py"):
            text = (CHECKED_IN / f).read_text()
            assert "from cbd.v1 import" not in text and "from google.rpc import" not in text, f
