# Sourced by scripts that start their own servers (bench-cluster.sh,
# soak.sh, faults.sh): ends only the processes they name.

# stop PID...: SIGTERM, up to 10 s to exit, then SIGKILL.
stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
