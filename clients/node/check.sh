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
# The bench compares with a Redis-Lua breaker; a short run proves it still runs.
echo "== clients/node: bench.js smoke (0.2 s per row)"
node bench.js 0.2 16
echo "clients/node: ok"
