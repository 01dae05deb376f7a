#!/usr/bin/env bash
# Server-side decide over HTTP under load: starts a release server on a fresh SQLite store,
# creates a migration at dual_write 50%, and drives it with wrk (Debian package `wrk`).
# Usage: bash bench/decide.sh [connections] [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20s}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p switchyard-server
work="$(mktemp -d)"
export SWITCHYARD_TOKEN="bench-admin-token-0123456789"
export SWITCHYARD_SERVER="http://127.0.0.1:18080"
SWITCHYARD_ADMIN_TOKEN="$SWITCHYARD_TOKEN" RUST_LOG=warn ./target/release/switchyard serve \
  --http-addr 127.0.0.1:18080 --grpc-addr 127.0.0.1:0 \
  --database-url "sqlite://$work/switchyard.db" >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -sf "$SWITCHYARD_SERVER/healthz" >/dev/null && break; sleep 0.1; done
sy() { ./target/release/switchyard "$@" >/dev/null; }
sy migration create bench.decide --reason bench
sy record bench.decide expand-applied --reason bench
sy advance bench.decide --latest --reason bench
sy ramp bench.decide --percent 50 --latest --reason bench
# One wrk thread: the server gets the other core of a 2-core machine.
MIGRATION=bench.decide wrk -t1 -c"$connections" -d"$duration" --latency -s bench/decide.lua "$SWITCHYARD_SERVER"
