#!/bin/sh
# The etcd store's checks, for .ci/run (after tests/etcd/install.sh): lints of the
# `etcd` feature, then the store, election and registry tests against real etcd
# (CI set: a missing etcd fails them instead of skipping).
set -eu
cd "$(dirname "$0")/../.."
cargo clippy -p cbd --features etcd --all-targets -- -D warnings
CI="${CI:-1}" cargo test -p cbd --features etcd --lib store:: -- --nocapture
