#!/usr/bin/env bash
# clients/node: install from package-lock.json, run the tests (against a real cbd from
# $CBD_BIN), the TypeScript check of index.d.ts, and the README quickstart.
set -euo pipefail
cd "$(dirname "$0")"
: "${CBD_BIN:?set CBD_BIN to a cbd binary (e.g. target/debug/cbd)}"
export CBD_BIN
npm ci --no-audit --no-fund
node --test test/*.test.js   # includes test/quickstart.test.js: runs examples/quickstart.js
./node_modules/.bin/tsc -p test/types/tsconfig.json
echo "clients/node: ok"
