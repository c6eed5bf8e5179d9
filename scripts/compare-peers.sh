#!/usr/bin/env bash
# Runs one fan-out workload against crier, NATS, a Node Socket.IO server and
# a Bun server, side by side, on this machine's loopback, and writes the table.
#
#   scripts/compare-peers.sh [--subscribers "100 1000 5000"] [--duration 10]
#                            [--rates "0 100"] [--servers "crier nats socket.io bun"]
#                            [--crier-publish http|ws] [--out target/peers]
#
# CRIER_BIN=PATH serves with another crier binary (e.g. a build of an
# earlier commit, to compare before and after a change); the load client
# is always this checkout's target/release/crier.
#
# Workload (the same for every server): S subscribers, each on its own
# connection, on one channel/subject/room; one publisher; 64-byte payloads
# carrying their send time; --rate 0 = as fast as a window of 64
# publications in flight allows (in flight = not yet delivered to every
# subscriber), else a fixed rate. Every run gets a fresh server process, so
# its memory figures are its own. Everything listens on 127.0.0.1 only and
# every run ends by itself (its duration plus a few seconds).
#
# Load clients: `crier bench` for crier (WebSocket, client protocol v2 JSON,
# publishing through the HTTP API, or with --crier-publish ws the client
# `publish` command over one WebSocket, which `serve --dev`'s
# client.insecure allows), `nats-bench` (crates/crier-peers, async-nats) for
# NATS, scripts/peers/socketio/bench.mjs for Socket.IO, and `crier bench
# --protocol raw --publish-via ws` for Bun (scripts/peers/bun/server.js:
# `Bun.serve`, fan-out by `server.publish`, uWebSockets' pub/sub), so crier
# and Bun are measured by the same client; run with --crier-publish ws to
# publish to both the same way. Installs nats-server (apt), the Socket.IO
# packages and the `bun` package (npm, which ships the binary) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

subscribers="100 1000 5000"
rates="0 100"
duration=10
servers="crier nats socket.io bun"
crier_publish=http
out=target/peers
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) subscribers=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --crier-publish)
      case "$2" in http|ws) crier_publish=$2 ;; *) echo "--crier-publish takes http or ws" >&2; exit 2 ;; esac
      shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

need=()
case " $servers " in *" nats "*) command -v nats-server >/dev/null 2>&1 || need+=(nats-server) ;; esac
case " $servers " in *" socket.io "*|*" bun "*) command -v npm >/dev/null 2>&1 || need+=(nodejs npm) ;; esac
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
case " $servers " in *" socket.io "*)
  [ -d scripts/peers/socketio/node_modules ] || npm ci --prefix scripts/peers/socketio --no-audit --no-fund
esac
bun=scripts/peers/bun/node_modules/.bin/bun
case " $servers " in *" bun "*)
  [ -d scripts/peers/bun/node_modules ] || npm ci --prefix scripts/peers/bun --no-audit --no-fund
  # The npm package's postinstall links the binary; without it (--ignore-scripts)
  # bun.exe is a placeholder.
  "$bun" --version >/dev/null 2>&1 || {
    echo "$bun does not run; reinstall: rm -rf scripts/peers/bun/node_modules && npm ci --prefix scripts/peers/bun" >&2
    exit 1
  }
esac
cargo build --release -p crier -p crier-peers

mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; pid=""; }
trap cleanup EXIT

# start_server NAME LOG: starts a fresh server, sets $pid and $addr (host:port).
start_server() {
  local name=$1 log=$2 pattern
  case "$name" in
    crier)
      "${CRIER_BIN:-target/release/crier}" serve --dev --port 0 >"$log" 2>&1 &
      pattern='s/^crier listening on http:\/\/\([0-9.:]*\).*/\1/p' ;;
    nats)
      nats-server -a 127.0.0.1 -p -1 >"$log" 2>&1 &
      pattern='s/.*Listening for client connections on \([0-9.:]*\).*/\1/p' ;;
    socket.io)
      node scripts/peers/socketio/server.mjs --port 0 >"$log" 2>&1 &
      pattern='s/^listening \([0-9.:]*\).*/\1/p' ;;
    bun)
      "$bun" scripts/peers/bun/server.js --port 0 >"$log" 2>&1 &
      pattern='s/^listening \([0-9.:]*\).*/\1/p' ;;
    *) echo "unknown server: $name (crier, nats, socket.io or bun)" >&2; exit 2 ;;
  esac
  pid=$!
  addr=""
  for _ in $(seq 100); do
    addr=$(sed -n "$pattern" "$log" | head -n 1)
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start; its output:" >&2
  cat "$log" >&2
  exit 1
}

for s in $subscribers; do
  for rate in $rates; do
    for name in $servers; do
      log="$out/$name-$s-$rate.log"
      start_server "$name" "$log"
      printf '%-9s S=%-5s rate=%-4s ' "$name" "$s" "$rate" >&2
      case "$name" in
        crier)
          via=api; [ "$crier_publish" = ws ] && via=ws
          line=$(target/release/crier bench --url "ws://$addr/connection/websocket" \
            --server-pid "$pid" --subscribers "$s" --rate "$rate" --window 64 \
            --duration "${duration}s" --size 64 --publish-via "$via" --json) ;;
        nats)
          line=$(target/release/nats-bench --server "$addr" --server-pid "$pid" \
            --subscribers "$s" --rate "$rate" --window 64 --duration "$duration" --size 64) ;;
        socket.io)
          line=$(node scripts/peers/socketio/bench.mjs --url "http://$addr" --server-pid "$pid" \
            --subscribers "$s" --rate "$rate" --window 64 --duration "$duration" --size 64) ;;
        bun)
          line=$(target/release/crier bench --protocol raw --publish-via ws --url "ws://$addr/" \
            --server-pid "$pid" --subscribers "$s" --rate "$rate" --window 64 \
            --duration "${duration}s" --size 64 --json) ;;
      esac
      cleanup
      # Tag the line with the server's name (crier bench does not know it).
      line=$(printf '%s' "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["server"]=sys.argv[1]; print(json.dumps(d))' "$name")
      printf '%s\n' "$line" >> "$results"
      printf '%s\n' "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("{:>12,.0f} deliveries/s, loss {}".format(d["deliveries_per_second"], d["loss"]))' >&2
    done
  done
done

python3 - "$results" > "$out/table.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def server(r):
    # crier publishing over a WebSocket is another row than over the HTTP API.
    return r["server"] + (" (ws publish)" if r["server"] == "crier" and r.get("publish_via") == "ws" else "")
def f(x, scale=1, digits=2, suffix=""):
    return "—" if x is None else f"{x / scale:,.{digits}f}{suffix}"
print("| S | rate | server | deliveries/s | loss | p50 | p99 | max | server µs/delivery | server cores | server RSS/conn | server peak RSS |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    lat = r.get("latency_us") or {}
    print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        f"{r['subscribers']:,}", "max" if r["rate"] == 0 else f"{r['rate']}/s", server(r),
        f(r["deliveries_per_second"], 1e6, 3, " M"), r["loss"],
        f(lat.get("p50"), 1e3, 2, " ms"), f(lat.get("p99"), 1e3, 2, " ms"), f(lat.get("max"), 1e3, 1, " ms"),
        f(r.get("server_cpu_us_per_delivery"), 1, 2), f(r.get("server_cpu_cores"), 1, 2),
        f(r.get("server_rss_per_connection_bytes"), 1024, 1, " KiB"), f(r.get("server_peak_rss_bytes"), 2**20, 1, " MiB")))
PY
cat "$out/table.md"
echo "results: $results, table: $out/table.md" >&2
