#!/usr/bin/env bash
# What the backend's proxies cost (docs/benchmarks.md, "Proxies"): the
# same crier bench workload with a JWT per connection and with the connect
# proxy; with and without the subscribe proxy; publications through the
# publish proxy against none. The backend is tests-interop/bench/backend.mjs
# (Node, fixed answers). Loopback only; prints one JSON line per run.
#
#   scripts/bench-proxy.sh [ROUNDS] [SUBSCRIBERS]
#
# CRIER_BIN=PATH serves with another build. Needs `cargo build --release
# -p crier` and node.
set -euo pipefail
cd "$(dirname "$0")/.."
crier=${CRIER_BIN:-target/release/crier}
rounds=${1:-2}
subs=${2:-2000}
dir=$(mktemp -d)
trap 'kill $backend 2>/dev/null || true; rm -rf "$dir"' EXIT
secret=bench-secret-bench-secret-bench-secret

backend_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node tests-interop/bench/backend.mjs "$backend_port" >/dev/null &
backend=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/"$backend_port") 2>/dev/null && break; sleep 0.1; done

# config NAME CONNECT_PROXY SUBSCRIBE_PROXY PUBLISH_PROXY
config() {
  {
    echo "[client.token]"; echo "hmac_secret_key = \"$secret\""
    echo "[http_api]"; echo "key = \"k\""
    echo "[client]"; echo "connection_limit = 0"
    echo "[channel.without_namespace]"
    echo "allow_subscribe_for_client = true"; echo "allow_publish_for_client = true"
    echo "subscribe_proxy_enabled = $3"; echo "publish_proxy_enabled = $4"
    echo "[client.proxy.connect]"; echo "enabled = $2"; echo "endpoint = \"http://127.0.0.1:$backend_port/connect\""
    echo "[channel.proxy.subscribe]"; echo "endpoint = \"http://127.0.0.1:$backend_port/subscribe\""
    echo "[channel.proxy.publish]"; echo "endpoint = \"http://127.0.0.1:$backend_port/publish\""
  } >"$dir/$1.toml"
}
config jwt false false false
config connect-proxy true false false
config subscribe-proxy false true false
config publish-proxy false false true
token=$("$crier" token --secret "$secret" --user bench)

# run CONFIG LABEL BENCH-ARGS...
run() {
  local cfg=$1 label=$2; shift 2
  local log="$dir/server.log"
  "$crier" serve -c "$dir/$cfg.toml" --port 0 >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  local port
  port=$(grep -o "127.0.0.1:[0-9]*" "$log" | head -1 | cut -d: -f2)
  "$crier" bench --url "ws://127.0.0.1:$port/connection/websocket" --server-pid "$pid" --api-key k "$@" --json |
    tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); c=d['connect_ms']; print(json.dumps({'run': '$label', 'subscribers': d['subscribers'], 'connect_took_ms': c['took'], 'connections_per_s': round(d['subscribers'] / (c['took'] / 1000)), 'connect_p50_ms': c['p50'], 'connect_p99_ms': c['p99'], 'publish_rate': d['publish_rate'], 'loss': d['loss'], 'server_cpu_us_per_delivery': d['server_cpu_us_per_delivery']}))"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for _ in $(seq 1 "$rounds"); do
  run jwt "connect: JWT" --token "$token" --subscribers "$subs" --rate 10 --duration 1s
  run connect-proxy "connect: connect proxy" --subscribers "$subs" --rate 10 --duration 1s
  run subscribe-proxy "subscribe: proxy (JWT connect)" --token "$token" --subscribers "$subs" --rate 10 --duration 1s
  run jwt "publish: no proxy" --token "$token" --subscribers 10 --publishers 4 --publish-via ws --rate 0 --duration 5s
  run publish-proxy "publish: publish proxy" --token "$token" --subscribers 10 --publishers 4 --publish-via ws --rate 0 --duration 5s
done
