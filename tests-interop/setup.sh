#!/usr/bin/env bash
# Installs the client SDKs the interop tests drive: centrifuge-js (npm, from
# package-lock.json) into tests-interop/node_modules, and centrifuge-python +
# cent (pip, from requirements.txt) into tests-interop/.venv. Idempotent: a
# step is skipped while its lock file is unchanged since it last succeeded.
# Concurrent runs (parallel test binaries) take turns on a lock.
#
# Afterwards `tests-interop/.venv/bin/python` runs Python with the packages,
# whether from a real venv or, where python3-venv is missing (Debian), from
# `pip install --target` with a small launcher in its place.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
node -e 'process.exit(parseInt(process.versions.node) >= 18 ? 0 : 1)' 2>/dev/null ||
  missing+=("Node.js >= 18 (node)")
command -v npm >/dev/null || missing+=("npm")
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
  missing+=("Python >= 3.10 (python3)")
if ((${#missing[@]})); then
  printf -v list '%s, ' "${missing[@]}"
  echo "crier interop tests need ${list%, }. Install them, e.g." \
    "'apt-get install nodejs npm python3 python3-venv' or 'brew install node python'." >&2
  exit 1
fi

# One installer at a time: flock where it exists (Linux), mkdir elsewhere.
# The lock lives outside the tree, which holds nothing untracked but the
# ignored install directories (and those get deleted and recreated).
lock="${TMPDIR:-/tmp}/crier-interop-setup-$(printf %s "$PWD" | cksum | cut -d' ' -f1).lock"
if command -v flock >/dev/null; then
  exec 9>"$lock"
  flock 9
else
  [[ -d $lock.d ]] && echo "waiting for $lock.d (remove it if stale)" >&2
  until mkdir "$lock.d" 2>/dev/null; do sleep 0.2; done
  trap 'rmdir "$lock.d"' EXIT
fi

# The copy of each lock file left after a successful install is the stamp.
if ! cmp -s package-lock.json node_modules/.crier-installed; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.crier-installed
fi

if ! cmp -s requirements.txt .venv/.crier-installed; then
  rm -rf .venv
  if python3 -m venv .venv 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  else
    echo "python3 -m venv failed (python3-venv missing?): using pip install --target" >&2
    rm -rf .venv
    if ! python3 -m pip --version >/dev/null 2>&1; then
      echo "crier interop tests need python3-venv or pip:" \
        "install python3-venv (or python3-pip)." >&2
      exit 1
    fi
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
      --target .venv/site-packages -r requirements.txt
    mkdir -p .venv/bin
    printf '#!/bin/sh\nPYTHONPATH="%s" exec "%s" "$@"\n' \
      "$PWD/.venv/site-packages" "$(command -v python3)" >.venv/bin/python
    chmod +x .venv/bin/python
  fi
  cp requirements.txt .venv/.crier-installed
fi
