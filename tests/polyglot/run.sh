#!/usr/bin/env bash
# Polyglot proof: Python (grpcio) and Node (@grpc/grpc-js) clients, generated from
# proto/ alone, against a real cbd. Run after `cargo build -p cbd` (or set CBD_BIN).
# Installs python3/venv and node/npm with apt-get when they are missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CBD_BIN="${CBD_BIN:-$REPO/target/debug/cbd}"

if [[ ! -x "$CBD_BIN" ]]; then
  echo "polyglot: no cbd binary at $CBD_BIN (cargo build -p cbd first)" >&2
  exit 1
fi

apt_updated=0
apt_install() {
  if [[ $apt_updated == 0 ]]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# --- Python ------------------------------------------------------------------------
cd "$HERE/python"
if [[ ! -x .venv/bin/python ]]; then
  if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
    echo "== polyglot: installing python3 python3-venv"
    apt_install python3 python3-venv
  fi
  rm -rf .venv
  python3 -m venv .venv || { apt_install python3-venv && rm -rf .venv && python3 -m venv .venv; }
fi
echo "== polyglot: pip install -r requirements.txt"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "== polyglot: pytest (Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'))"
.venv/bin/python -m pytest -p no:cacheprovider

# --- Node --------------------------------------------------------------------------
cd "$HERE/node"
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
# The machine image has Node 20 (with npm); Debian 12's own nodejs is 18, the oldest
# with a stable `node --test`.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== polyglot: installing nodejs npm"
  apt_install nodejs npm
fi
if (( $(node_major) < 18 )); then
  echo "polyglot: Node >= 18 needed for node --test, have $(node --version)" >&2
  exit 1
fi
echo "== polyglot: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "== polyglot: node --test (Node $(node --version))"
node --test
