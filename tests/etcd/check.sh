#!/bin/sh
# The etcd store's checks, run by .ci/run (which installs etcd and protoc): lints of the
# `etcd` feature, the store, election and registry tests against real etcd, then cbd
# replicas end to end (tests/tests/replicas.rs: kill -9 of the leader, a partition,
# etcd losing a member and its quorum). CI set: a missing etcd fails them instead of
# skipping.
set -eu
cd "$(dirname "$0")/../.."
cargo clippy -p cbd -p cbd-tests --features cbd/etcd,cbd-tests/etcd --all-targets -- -D warnings
# One at a time (30 s): run two at once, a_leader_whose_lease_was_revoked_cannot_commit
# failed once in four suites (the new leader's first commit found no leader key); the
# cause is not found yet. Alone it passed every time.
CI="${CI:-1}" cargo test -p cbd --features etcd --lib store:: -- --nocapture --test-threads=1
# The replicas run target/debug/cbd: built with the feature here (it serves sled as
# before, so later steps may use it too), and cbctl beside it.
cargo build -p cbd --features etcd --bins
cargo build -p cbctl
CI="${CI:-1}" cargo test -p cbd-tests --features etcd --test replicas -- --nocapture
