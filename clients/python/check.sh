#!/usr/bin/env bash
# clients/python: a venv in .venv with the pinned requirements-dev.txt, the package
# installed from this directory (as a user would: pip install ./clients/python), and
# pytest against a real cbd from $CBD_BIN (the quickstart and the stub staleness
# test included). Installs python3-venv with apt-get when `python3 -m venv` is missing.
set -euo pipefail
cd "$(dirname "$0")"
: "${CBD_BIN:?set CBD_BIN to a cbd binary (e.g. target/debug/cbd)}"
export CBD_BIN

if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "== clients/python: installing python3 python3-venv"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
  echo "clients/python: Python >= 3.9 needed, have $(python3 --version)" >&2
  exit 1
}
if [[ ! -x .venv/bin/python ]]; then
  rm -rf .venv
  python3 -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install -r requirements-dev.txt
# Not editable: the tests import the installed package, stubs and all.
pip install --force-reinstall --no-deps .
echo "== clients/python: pytest ($(.venv/bin/python --version))"
.venv/bin/python -m pytest
# The bench compares with Redis breakers; a short run proves it still runs (numbers
# from it are not the README's: those take seconds per row, on a release build).
echo "== clients/python: bench.py smoke (0.2 s per row)"
.venv/bin/python bench.py 0.2 4 16
echo "clients/python: ok"
