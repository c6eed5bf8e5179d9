#!/usr/bin/env bash
# Autobahn|Testsuite conformance of crier's server-side WebSocket code
# (net/rfc6455.rs framing, net/deflate.rs permessage-deflate, the same
# upgrade handling), through the test-only echo endpoint
# crates/crier-server/examples/ws_echo.rs.
#
# Installs autobahntestsuite 0.8.2 into tests-autobahn/.venv (Python 2.7,
# virtualenv<20.22; ignored by git) if it is not there, starts the echo
# server on 127.0.0.1 on a free port, runs the fuzzing client over cases
# 1-10 and 12-13, and compares every case's verdict with
# tests-autobahn/expected.json. wstest exits 0 even when cases fail, so the
# verdicts are read from reports/index.json. Exits non-zero on any
# difference, or if a verdict is not OK, NON-STRICT or INFORMATIONAL.
#
#   bash scripts/autobahn.sh                 # check (CI: 1-10, a sample of 12-13)
#   bash scripts/autobahn.sh --full          # check all of 12-13 too (about
#                                            # 15 minutes more on 2 cores)
#   bash scripts/autobahn.sh [--full] --update  # record this run's verdicts
#
# expected.json holds every case's verdict (the full run's); a run checks
# the cases its list selects.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=fuzzingclient.json
update=
for arg in "$@"; do
  case "$arg" in
    --full) cases=fuzzingclient-full.json ;;
    --update) update=--update ;;
    *) echo "autobahn: unknown argument $arg (--full, --update)" >&2; exit 2 ;;
  esac
done
dir=tests-autobahn
venv=$dir/.venv
work=$dir/reports

python2=${PYTHON2:-}
if [ -z "$python2" ]; then
  for p in python2.7 /root/.pyenv/versions/2.7.18/bin/python "$HOME"/.pyenv/versions/2.7*/bin/python; do
    # It must run: a pyenv shim exists for versions that are not selected.
    if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then python2=$p; break; fi
  done
fi
if [ ! -x "$venv/bin/wstest" ]; then
  [ -n "$python2" ] || { echo "autobahn: no Python 2.7 found (set PYTHON2)" >&2; exit 1; }
  "$python2" -m pip install --disable-pip-version-check -q --target "$dir/.tools" 'virtualenv<20.22'
  PYTHONPATH=$dir/.tools "$python2" -m virtualenv -q "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q 'autobahntestsuite==0.8.2'
fi

cargo build -q --release -p crier-server --features fuzzing --example ws_echo
rm -rf "$work"
mkdir -p "$work"
# The server prints "listening on ADDR" once bound: read it from a FIFO,
# which blocks until the line is there.
mkfifo "$work/ready"
target/release/examples/ws_echo 127.0.0.1:0 > "$work/ready" &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true; wait "$echo_pid" 2>/dev/null || true' EXIT
line=
read -r -t 60 line < "$work/ready" || true
addr=${line#listening on }
[ -n "$addr" ] || { echo "autobahn: the echo server did not start" >&2; exit 1; }

sed "s#@ADDR@#$addr#" "$dir/$cases" > "$work/fuzzingclient.json"
start=$(date +%s)
(cd "$work" && timeout "${AUTOBAHN_TIMEOUT:-3600}" "../.venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1)
echo "autobahn: wstest took $(( $(date +%s) - start ))s"

"$venv/bin/python" - "$work/reports/index.json" "$dir/expected.json" "$update" "$work/fuzzingclient.json" <<'PY'
import fnmatch, json, sys
from collections import Counter
got = json.load(open(sys.argv[1]))["crier"]
verdicts = dict((case, {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]})
                for case, r in got.items())
print("autobahn: %d cases: %s" % (len(verdicts), ", ".join(
    "%s %d" % kv for kv in sorted(Counter(v["behavior"] for v in verdicts.values()).items()))))
expected = json.load(open(sys.argv[2]))
if sys.argv[3] == "--update":
    # Cases this run did not select keep their recorded verdicts.
    expected.update(verdicts)
    with open(sys.argv[2], "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    print("autobahn: wrote " + sys.argv[2])
    sys.exit(0)
# Only the cases this run's list selects are expected to have run.
config = json.load(open(sys.argv[4]))
def selected(case):
    return (any(fnmatch.fnmatch(case, p) for p in config["cases"])
            and not any(fnmatch.fnmatch(case, p) for p in config.get("exclude-cases", [])))
expected = dict((c, v) for c, v in expected.items() if selected(c))
bad = ["%s: not run" % c for c in sorted(set(expected) - set(verdicts))]
bad += ["%s: %s, expected %s" % (c, verdicts[c], expected.get(c))
        for c in sorted(verdicts) if verdicts[c] != expected.get(c)]
bad += ["%s: %s" % (c, v["behavior"]) for c, v in sorted(verdicts.items())
        if v["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")]
for b in bad:
    print("autobahn: " + b)
sys.exit(1 if bad else 0)
PY
