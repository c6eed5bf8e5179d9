#!/usr/bin/env bash
# Network partitions between a crier node and its broker (Redis, then NATS
# with JetStream), made in a network namespace this script creates, on
# that namespace's links only. Needs root (CI runs as root); without it,
# it says so loudly and exits 0.
#
#   scripts/faults.sh [--engines "redis nats"] [--modes "silent down"]
#                     [--detect-within SECONDS] [--out DIR]
#
# Per engine: a namespace holds the broker, reachable from the root
# namespace over two veth pairs on private addresses (10.200.X.1-2/30 for
# node A, 10.200.X.5-6/30 for node B); nodes A and B run in the root
# namespace and serve their clients on 127.0.0.1. The real centrifuge-python
# SDK (tests-interop/.venv) subscribes on each node with recovery; a backend
# publishes through B every 100 ms; A's link is cut, then restored, once
# per mode: `silent` (packets vanish both ways, the link stays up: tc netem
# loss 100% where the kernel has sch_netem, else neighbour entries pointed
# at a MAC address nobody has) and `down` (ip link set down).
# scripts/faults/check.py checks what each side sees (see its docstring):
# A's API answers 100, A's subscriber is told 2500 within --detect-within
# seconds (default 20) and recovers once the link is back, B's keeps
# receiving, and both end with every offset exactly once, in order.
# Results: DIR/<engine>/<mode>/result.json (default DIR: target/faults).
#
# Installs iproute2 with apt when `ip` or `tc` is missing, builds
# target/release/crier (a no-op when current), runs tests-interop/setup.sh when the
# SDK's venv is missing. Only what this script made is removed (its
# namespace, hence its veths) and only its own processes are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

engines="redis nats"
modes="silent down"
detect_within=20
out=target/faults
while [ $# -gt 0 ]; do
  case "$1" in
    --engines) engines=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --detect-within) detect_within=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "#####################################################################" >&2
  echo "# scripts/faults.sh: SKIPPED, not root: network namespaces and tc   #" >&2
  echo "# need root. The partition tests did not run.                       #" >&2
  echo "#####################################################################" >&2
  exit 0
fi
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2
fi
for e in $engines; do
  case "$e" in
    redis) command -v redis-server >/dev/null || { echo "scripts/faults.sh: redis-server missing (scripts/test --install-only installs it)" >&2; exit 1; } ;;
    nats) command -v nats-server >/dev/null || { echo "scripts/faults.sh: nats-server missing (scripts/test --install-only installs it)" >&2; exit 1; } ;;
    *) echo "scripts/faults.sh: unknown engine $e (redis, nats)" >&2; exit 2 ;;
  esac
done
# A no-op when the binary is current; builds it on a fresh clone.
cargo build --release -p crier
python=tests-interop/.venv/bin/python
if ! "$python" -c 'import centrifuge' 2>/dev/null; then
  bash tests-interop/setup.sh
fi
python=$PWD/$python

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
api_key=faults-api-key
io_timeout=1
ns=""
pids=()

# stop PID...: scripts/lib/stop.sh
. scripts/lib/stop.sh
cleanup() {
  [ ${#pids[@]} -eq 0 ] || stop "${pids[@]}"
  pids=()
  if [ -n "$ns" ]; then
    # Deleting the namespace deletes the veth ends in it, and with them
    # their peers in the root namespace.
    ip netns del "$ns" 2>/dev/null || true
    ns=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# two_free_ports: two distinct ports on 127.0.0.1 that were free a moment
# ago (both held at once, so the kernel cannot hand out the same one twice).
two_free_ports() {
  python3 -c 'import socket; a=socket.socket(); a.bind(("127.0.0.1", 0)); b=socket.socket(); b.bind(("127.0.0.1", 0)); print(a.getsockname()[1], b.getsockname()[1])'
}

# wait_node PID LOG PORT: until the crier node PID says it listens on PORT
# (bounded); fails if it exits first (say, its port was taken meanwhile),
# so a client never talks to another process on that port.
wait_node() {
  for _ in $(seq 100); do
    grep -q "crier listening on http://127.0.0.1:$3" "$2" 2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "a crier node did not start on port $3; its log ($2):" >&2
  cat "$2" >&2
  return 1
}

# wait_port HOST PORT [NETNS]: until something accepts there (bounded).
wait_port() {
  local cmd=(python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' "$1" "$2")
  for _ in $(seq 100); do
    if [ -n "${3:-}" ]; then ip netns exec "$3" "${cmd[@]}" 2>/dev/null && return 0
    else "${cmd[@]}" 2>/dev/null && return 0; fi
    sleep 0.1
  done
  return 1
}

write_config() {
  local file=$1 port=$2 engine=$3 address=$4
  cat > "$file" <<EOF
# Generated by scripts/faults.sh.
[http_server]
address = "127.0.0.1"
port = $port

[client]
allow_anonymous_connect_without_token = true

[http_api]
key = "$api_key"

[[channel.namespaces]]
name = "faults"
allow_subscribe_for_anonymous = true
allow_subscribe_for_client = true
history_size = 1000
history_ttl = "300s"
force_recovery = true

[engine]
type = "$engine"

[engine.$engine]
address = "$address"
connect_timeout = "500ms"
io_timeout = "${io_timeout}s"
EOF
}

status=0
round=0
for engine in $engines; do
  dir="$out/$engine"
  mkdir -p "$dir"
  # Names and addresses of their own per engine: the previous engine's
  # namespace (and its veths) may outlive `ip netns del` for a moment
  # while its broker exits.
  round=$((round + 1))
  tag="$(( $$ % 10000 ))${engine:0:1}"
  ns="crier-faults-$tag"
  net=$(( 20 + ($$ + round) % 200 ))
  va="cfa$tag" vb="cfb$tag"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$va" type veth peer name "${va}p" netns "$ns"
  ip link add "$vb" type veth peer name "${vb}p" netns "$ns"
  ip addr add "10.200.$net.1/30" dev "$va"
  ip addr add "10.200.$net.5/30" dev "$vb"
  ip -n "$ns" addr add "10.200.$net.2/30" dev "${va}p"
  ip -n "$ns" addr add "10.200.$net.6/30" dev "${vb}p"
  ip link set "$va" up
  ip link set "$vb" up
  ip -n "$ns" link set "${va}p" up
  ip -n "$ns" link set "${vb}p" up
  broker_a="10.200.$net.2" broker_b="10.200.$net.6"

  # Two partitions of A's link, one after the other:
  #  silent: the link stays up and every packet on it vanishes, both ways
  #    (as when a path fails somewhere between): `tc netem loss 100%` on
  #    each end when the kernel has sch_netem, else each end's neighbour
  #    entry for the other pointed at an address nobody has, so frames
  #    reach no one (iproute2 only, no kernel module);
  #  down: the link goes down (the node's packets fail at once).
  if tc qdisc add dev "$va" root netem loss 0% 2>/dev/null; then
    tc qdisc del dev "$va" root
    silent_cut="tc qdisc add dev $va root netem loss 100% && ip netns exec $ns tc qdisc add dev ${va}p root netem loss 100%"
    silent_heal="tc qdisc del dev $va root && ip netns exec $ns tc qdisc del dev ${va}p root"
    silent_how="tc netem loss 100% on both ends"
  else
    nowhere=02:00:00:00:de:ad
    silent_cut="ip neigh replace $broker_a lladdr $nowhere dev $va nud permanent && ip -n $ns neigh replace 10.200.$net.1 lladdr $nowhere dev ${va}p nud permanent"
    silent_heal="ip neigh del $broker_a dev $va && ip -n $ns neigh del 10.200.$net.1 dev ${va}p"
    silent_how="neighbour entries of both ends pointed at $nowhere (no sch_netem here)"
  fi
  down_cut="ip link set $va down"
  down_heal="ip link set $va up"

  case "$engine" in
    redis)
      # Protected mode refuses clients from other addresses than loopback;
      # only the two nodes, over this namespace's links, can reach it.
      ip netns exec "$ns" redis-server --bind "$broker_a" "$broker_b" --port 6379 --protected-mode no --save '' --appendonly no \
        >"$dir/redis.log" 2>&1 &
      pids+=($!)
      wait_port "$broker_a" 6379 "$ns" || { echo "redis-server did not start:" >&2; cat "$dir/redis.log" >&2; exit 1; }
      addr_a="redis://$broker_a:6379" addr_b="redis://$broker_b:6379"
      ;;
    nats)
      ip netns exec "$ns" nats-server -a 0.0.0.0 -p 4222 -js -sd "$dir/nats-store" >"$dir/nats.log" 2>&1 &
      pids+=($!)
      wait_port "$broker_a" 4222 "$ns" || { echo "nats-server did not start:" >&2; cat "$dir/nats.log" >&2; exit 1; }
      addr_a="nats://$broker_a:4222" addr_b="nats://$broker_b:4222"
      ;;
  esac

  read -r port_a port_b < <(two_free_ports)
  write_config "$dir/node-a.toml" "$port_a" "$engine" "$addr_a"
  write_config "$dir/node-b.toml" "$port_b" "$engine" "$addr_b"
  target/release/crier serve --config "$dir/node-a.toml" >"$dir/node-a.log" 2>&1 &
  pid_a=$!
  pids+=("$pid_a")
  target/release/crier serve --config "$dir/node-b.toml" >"$dir/node-b.log" 2>&1 &
  pid_b=$!
  pids+=("$pid_b")
  wait_node "$pid_a" "$dir/node-a.log" "$port_a" || exit 1
  wait_node "$pid_b" "$dir/node-b.log" "$port_b" || exit 1

  for mode in $modes; do
    case "$mode" in
      silent) cut=$silent_cut heal=$silent_heal how=$silent_how ;;
      down) cut=$down_cut heal=$down_heal how="ip link set $va down" ;;
      *) echo "scripts/faults.sh: unknown mode $mode (silent, down)" >&2; exit 2 ;;
    esac
    mkdir -p "$dir/$mode"
    echo "scripts/faults.sh: $engine, $mode partition between node A and the broker ($how; namespace $ns, 10.200.$net.0/29)" >&2
    started=$(date +%s)
    if timeout 400 python3 scripts/faults/check.py --engine "$engine" --channel "faults:$engine-$mode" \
        --node-a "http://127.0.0.1:$port_a" --node-b "http://127.0.0.1:$port_b" \
        --api-key "$api_key" --cut "$cut" --heal "$heal" --python "$python" \
        --io-timeout "$io_timeout" --detect-within "$detect_within" --out "$dir/$mode"; then
      echo "scripts/faults.sh: $engine, $mode: PASS in $(( $(date +%s) - started )) s" >&2
    else
      echo "scripts/faults.sh: $engine, $mode: FAIL (see $dir/$mode/result.json and the logs in $dir)" >&2
      status=1
      # A link left cut would spoil the next mode: restore it.
      bash -c "$heal" 2>/dev/null || true
    fi
  done
  cleanup
done
exit "$status"
