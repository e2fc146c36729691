#!/bin/bash
# The same run measures cbd on sled and a cbd replica on etcd (one etcd member, its data
# on the same disk): durable changes/s (`cbctl bench --mode override`: one SetOverride
# per unit, acknowledged after its group commit) and Acquire/Report pairs/s
# (`--mode unary`: decisions never touch the store, so these should match).
#
#   bash tests/etcd/bench.sh --release --duration 10s     # the README's numbers
#   bash tests/etcd/bench.sh --duration 1s                # CI's smoke (debug build)
#
# Needs etcd (Debian etcd-server) and protoc (protobuf-compiler, libprotobuf-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=debug
duration=5s
concurrency=64
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --duration) duration="$2"; shift ;;
    --concurrency) concurrency="$2"; shift ;;
    *) echo "usage: $0 [--release] [--duration D] [--concurrency N]" >&2; exit 2 ;;
  esac
  shift
done
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p cbd --features etcd --bins
cargo build -q "${flag[@]}" -p cbctl
bin="$PWD/target/$profile"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

client_port=$(free_port)
peer_port=$(free_port)
etcd --data-dir "$tmp/etcd" --listen-client-urls "http://127.0.0.1:$client_port" \
  --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" > "$tmp/etcd.log" 2>&1 &
pids+=($!)
"$bin/cbd" --data-dir "$tmp/sled" --listen 127.0.0.1:0 --addr-file "$tmp/sled.addr" \
  --log-level warn 2> "$tmp/sled.log" &
pids+=($!)
"$bin/cbd" --store etcd --etcd-endpoints "http://127.0.0.1:$client_port" \
  --listen 127.0.0.1:0 --addr-file "$tmp/etcd.addr" --log-level warn 2> "$tmp/replica.log" &
pids+=($!)

# Ready: the sled daemon SERVING, and the replica leading (cbd.v1.Leader SERVING).
ready() {
  local store=$1 service=$2
  for _ in $(seq 1 300); do
    if [ -s "$tmp/$store.addr" ] \
      && "$bin/cbctl" --endpoint "$(cat "$tmp/$store.addr")" health --service "$service" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "bench: the $store daemon never became ready" >&2
  cat "$tmp"/*.log >&2
  exit 1
}
ready sled ""
ready etcd cbd.v1.Leader

run() {
  local store=$1 mode=$2
  "$bin/cbctl" --endpoint "$(cat "$tmp/$store.addr")" -o json bench --mode "$mode" \
    --duration "$duration" --concurrency "$concurrency" --connections 4 --breakers 64 \
    > "$tmp/$store-$mode.json"
}
for mode in override unary; do
  run sled "$mode"
  run etcd "$mode"
done

python3 - "$tmp" "$profile" "$duration" "$concurrency" <<'PY'
import json, sys
tmp, profile, duration, concurrency = sys.argv[1:]
def get(store, mode):
    with open(f"{tmp}/{store}-{mode}.json") as f:
        return json.load(f)
print(f"cbd on sled vs a cbd replica on etcd ({profile} build, {duration} each, c{concurrency}, 64 breakers, same run)")
print(f"{'what':<34} {'sled':>12} {'etcd':>12} {'etcd/sled':>10}   p99 sled / etcd")
for mode, what in [("override", "durable changes/s (SetOverride)"), ("unary", "Acquire+Report pairs/s")]:
    s, e = get("sled", mode), get("etcd", mode)
    ratio = e["pairs_per_sec"] / s["pairs_per_sec"] if s["pairs_per_sec"] else float("nan")
    errors = s["errors"] + e["errors"]
    print(f"{what:<34} {s['pairs_per_sec']:>12,.0f} {e['pairs_per_sec']:>12,.0f} {ratio:>9.2f}x   "
          f"{s['latency']['p99_us']/1000:.1f} / {e['latency']['p99_us']/1000:.1f} ms"
          + (f"   ({errors} errors)" if errors else ""))
PY
