#!/bin/sh
# What the etcd store's tests (`cargo test -p cbd --features etcd`) need, for .ci/run:
# etcd 3.4 (server and etcdctl) from Debian, and protoc for the etcd-client crate.
set -eu
apt-get update
apt-get install -y etcd-server etcd-client protobuf-compiler
