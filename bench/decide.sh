#!/usr/bin/env bash
# Server-side decide over HTTP under load, side by side with Unleash Edge when it is installed.
#
# Starts a release server on a fresh SQLite store with a migration at dual_write 50%, and (if
# `unleash-edge` is on PATH, from `cargo install unleash-edge --locked`) Unleash Edge in offline
# mode with one flag at a 50% gradual rollout on userId, the same decision asked of both: one
# flag, one entity per request out of 1,024. Each server is started on CPU 1 and wrk (Debian
# package `wrk`, one thread) runs on CPU 0, so on a 2-core machine the server under test has one
# core to itself and the load generator the other, and each server sizes its worker pool to the
# one core it sees. The rounds alternate between the two so a machine that slows down mid-run
# slows both alike.
#
# Usage: bash bench/decide.sh [connections] [duration] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20s}"
rounds="${3:-3}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p switchyard-server
work="$(mktemp -d)"
pids=()
# Waits for the servers to exit, so a run right after this one finds its ports free.
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
for port in 18080 18081; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "port $port is taken (a server from an earlier run?); stop it first" >&2
    exit 1
  fi
done

wait_for() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$@" && return 0; sleep 0.1; done
  echo "not answering: $*" >&2
  exit 1
}

export SWITCHYARD_TOKEN="bench-admin-token-0123456789"
export SWITCHYARD_SERVER="http://127.0.0.1:18080"
SWITCHYARD_ADMIN_TOKEN="$SWITCHYARD_TOKEN" RUST_LOG=warn taskset -c 1 ./target/release/switchyard serve \
  --http-addr 127.0.0.1:18080 --grpc-addr 127.0.0.1:0 \
  --database-url "sqlite://$work/switchyard.db" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "$SWITCHYARD_SERVER/healthz"
sy() { ./target/release/switchyard "$@" >/dev/null; }
sy migration create bench.decide --reason bench
sy record bench.decide expand-applied --reason bench
sy advance bench.decide --latest --reason bench
sy ramp bench.decide --percent 50 --latest --reason bench

edge_token="*:development.bench-frontend-token-0123456789"
# Offline mode refuses to start without a client (backend) token, though the run uses none.
edge_client_token="*:development.bench-client-token-0123456789"
if command -v unleash-edge >/dev/null; then
  cat >"$work/features.json" <<'JSON'
{"version": 1, "features": [{"name": "bench.decide", "enabled": true, "strategies": [
  {"name": "flexibleRollout",
   "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "bench.decide"}}]}]}
JSON
  RUST_LOG=warn taskset -c 1 unleash-edge --port 18081 --interface 127.0.0.1 --workers 1 offline \
    --bootstrap-file "$work/features.json" --client-tokens "$edge_client_token" \
    --frontend-tokens "$edge_token" \
    >"$work/edge.log" 2>&1 &
  pids+=($!)
  wait_for -H "Authorization: $edge_token" \
    "http://127.0.0.1:18081/api/frontend/features/bench.decide?userId=user-1"
  echo "unleash-edge: $(cargo install --list | grep -o "^unleash-edge v[0-9.]*")"
else
  echo "unleash-edge is not on PATH (cargo install unleash-edge --locked): Switchyard alone"
fi

# One wrk run; prints "name requests/s p50 p90 p99 non-2xx errors".
run() {
  local name="$1" url="$2" path="$3" authorization="$4"
  local line
  line="$(DECIDE_PATH="$path" AUTHORIZATION="$authorization" \
    taskset -c 0 wrk -t1 -c"$connections" -d"$duration" -s bench/decide.lua "$url" | grep '^RESULT')"
  echo "$name ${line#RESULT }" | tee -a "$work/results"
}

echo "name requests/s p50_ms p90_ms p99_ms non2xx errors"
for _ in $(seq 1 "$rounds"); do
  run switchyard "$SWITCHYARD_SERVER" \
    "/v1/migrations/bench.decide/decide?entity_key=user-%d" "Bearer $SWITCHYARD_TOKEN"
  if command -v unleash-edge >/dev/null; then
    run unleash-edge http://127.0.0.1:18081 \
      "/api/frontend/features/bench.decide?userId=user-%d" "$edge_token"
  fi
done

# Medians over the rounds, and the ratios when both ran.
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
median = {n: [statistics.median(c) for c in zip(*r)] for n, r in rows.items()}
for n, m in median.items():
    print(f"median {n}: {m[0]:,.0f} requests/s, p50 {m[1]:.2f} ms, p90 {m[2]:.2f} ms, "
          f"p99 {m[3]:.2f} ms, non-2xx {m[4]:.0f}, errors {m[5]:.0f}")
if len(median) == 2:
    s, e = median["switchyard"], median["unleash-edge"]
    print(f"ratio: {s[0] / e[0]:.2f}x the requests/s, p99 {s[3] / e[3]:.2f} of the peer's")
PY
