# Shared by the scripts that test Switchyard with the ecosystem's own tools (api-fuzz,
# ecosystem): a pinned Python venv, and the real server started on a fresh SQLite store.
# Source it; it defines functions only.

# python_venv DIR REQUIREMENTS: creates (or reuses, while built from the same requirements)
# a venv at DIR holding exactly REQUIREMENTS.
python_venv() {
  local venv="$1" requirements="$2"
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
    return 0
  fi
  echo "installing $requirements into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    echo "python3 -m venv failed: install Python 3 with its venv module" \
      "(Debian: apt-get install python3-venv)" >&2
    return 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

# start_server TMPDIR TOKEN: builds the server and starts it on a fresh SQLite store in TMPDIR
# with TOKEN as its admin token, on free ports. Sets SERVER_PID, HTTP_BASE (http://host:port)
# and GRPC_ADDR (host:port); the server's output goes to TMPDIR/server.{out,err}. The caller
# stops it (stop_server).
start_server() {
  local tmp="$1" token="$2"
  cargo build -p switchyard-server
  SWITCHYARD_ADMIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" target/debug/switchyard serve \
    --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
    --database-url "sqlite://$tmp/s.db" --shutdown-drain 1s >"$tmp/server.out" 2>"$tmp/server.err" &
  SERVER_PID=$!
  HTTP_BASE=""
  local line
  # Waits for the line the server prints once both listeners are bound, or for it to exit.
  for _ in $(seq 1 300); do
    line="$(grep -m1 '^switchyard serving HTTP on ' "$tmp/server.out" || true)"
    if [ -n "$line" ]; then
      HTTP_BASE="$(awk '{print $5}' <<<"$line")"
      GRPC_ADDR="$(awk '{print $9}' <<<"$line")"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not start; its output:" >&2
  cat "$tmp/server.out" "$tmp/server.err" >&2
  return 1
}

stop_server() {
  if [ -n "${SERVER_PID:-}" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
