#!/usr/bin/env bash
# Validates what can be validated of deploy/ on one machine (CI runs this):
# - kubernetes/*.yaml against Kubernetes 1.31's schemas, strictly (unknown fields are
#   errors), with kubernetes-validate (pinned) in a venv under target/;
# - systemd/cbd.service with `systemd-analyze verify`, any warning an error (the unit's
#   ExecStart pointed at the built binary, since verify checks that it exists).
# The Grafana dashboard and the Prometheus rules are checked by `cargo test`
# (tests/tests/e2e/deploy.rs). Not checked here: that the manifests run on a cluster,
# that the unit runs under systemd as PID 1 (no systemd runs in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.31.0
fi
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.31.0 deploy/kubernetes/*.yaml

cbd="$PWD/target/debug/cbd"
[ -x "$cbd" ] || cargo build -q -p cbd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/cbd#$cbd#" deploy/systemd/cbd.service > "$tmp/cbd.service"
if ! out=$(systemd-analyze verify "$tmp/cbd.service" 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify deploy/systemd/cbd.service:"
  echo "$out"
  exit 1
fi
echo "deploy/systemd/cbd.service: systemd-analyze verify clean"
