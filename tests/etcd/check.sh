#!/bin/sh
# The etcd store's checks, run by .ci/run (which installs etcd and protoc): lints of the
# `etcd` feature, the store, election and registry tests against real etcd, then cbd
# replicas end to end (tests/tests/replicas.rs: kill -9 of the leader, a partition,
# etcd losing a member and its quorum). CI set: a missing etcd fails them instead of
# skipping.
set -eu
cd "$(dirname "$0")/../.."
cargo clippy -p cbd -p cbd-tests --features cbd/etcd,cbd-tests/etcd --all-targets -- -D warnings
# Run two at once, a_leader_whose_lease_was_revoked_cannot_commit once failed (the new
# leader's first commit found its fence gone): the observer's first read, answered
# after the campaign won, deposed the winner. Fixed in election.rs (a read older than
# the leadership cannot end it), with a test that fails without the fix.
CI="${CI:-1}" cargo test -p cbd --features etcd --lib store:: -- --nocapture
# The replicas run target/debug/cbd: built with the feature here (it serves sled as
# before, so later steps may use it too), and cbctl beside it.
cargo build -p cbd --features etcd --bins
cargo build -p cbctl
CI="${CI:-1}" cargo test -p cbd-tests --features etcd --test replicas -- --nocapture
