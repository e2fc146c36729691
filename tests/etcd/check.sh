#!/bin/sh
# The etcd store's checks, run by .ci/run (which installs etcd and protoc): lints of the
# `etcd` feature, then the store, election and registry tests against real etcd
# (CI set: a missing etcd fails them instead of skipping).
set -eu
cd "$(dirname "$0")/../.."
cargo clippy -p cbd --features etcd --all-targets -- -D warnings
# One at a time (30 s): run two at once, a_leader_whose_lease_was_revoked_cannot_commit
# failed once in four suites (the new leader's first commit found no leader key); the
# cause is not found yet. Alone it passed every time.
CI="${CI:-1}" cargo test -p cbd --features etcd --lib store:: -- --nocapture --test-threads=1
