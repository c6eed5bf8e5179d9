#!/usr/bin/env bash
# The client-protocol formats side by side (docs/benchmarks.md, "JSON,
# protobuf and compression"). Every run gets a fresh `crier serve --dev`
# on 127.0.0.1; prints one JSON line per run.
#
#   scripts/bench-formats.sh formats  [ROUNDS]   # JSON vs protobuf, 1,000 subscribers, max rate and 100/s, crier bench
#   scripts/bench-formats.sh deflate  [ROUNDS]   # JSON with and without permessage-deflate, 1,000 ws (Node) subscribers at 20/s
#   scripts/bench-formats.sh idle     [N]        # server RSS per idle subscribed connection, compression agreed or not (Python websockets)
#   scripts/bench-formats.sh emulation [ROUNDS]  # 100 http_stream subscribers vs 100 WebSocket ones (Node), 1,000 publications/s
#
# CRIER_BIN=PATH serves with another build (the load clients stay the same).
# Needs `cargo build --release -p crier` and `bash tests-interop/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
crier=${CRIER_BIN:-target/release/crier}
what=${1:-formats}

# serve [ENV=VALUE...]: starts a server; sets $pid and $port.
serve() {
  log=$(mktemp)
  env "$@" "$crier" serve --dev --port 0 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  port=$(grep -o "127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2)
  [ -n "$port" ] || { cat "$log"; exit 1; }
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$log"; }

case $what in
  formats)
    for _ in $(seq 1 "${2:-3}"); do
      for rate in 0 100; do
        for format in json protobuf; do
          serve
          target/release/crier bench --url "ws://127.0.0.1:$port/connection/websocket" --server-pid "$pid" \
            --subscribers 1000 --publishers 1 --rate "$rate" --duration 10s --size 64 --format "$format" --json |
            tail -1
          stop
        done
      done
    done ;;
  deflate)
    for _ in $(seq 1 "${2:-2}"); do
      for on in true false; do
        serve CRIER_WEBSOCKET_COMPRESSION=$on
        node tests-interop/bench/deflate.mjs "$port" "$pid" 1000 20 10
        stop
      done
    done ;;
  idle)
    for on in true false; do
      serve CRIER_WEBSOCKET_COMPRESSION=$on
      tests-interop/.venv/bin/python tests-interop/bench/idle.py "$port" "$pid" "${2:-8000}"
      stop
    done ;;
  emulation)
    for _ in $(seq 1 "${2:-2}"); do
      for transport in http_stream websocket; do
        serve
        node tests-interop/bench/emulation.mjs "$port" "$pid" 100 1000 10 "$transport"
        stop
      done
    done ;;
  *) echo "usage: $0 formats|deflate|idle|emulation [N]" >&2; exit 2 ;;
esac
