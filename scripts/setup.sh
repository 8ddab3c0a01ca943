#!/usr/bin/env bash
# One-command setup on a fresh Debian machine (run as root or with sudo available):
#   - installs Debian packages the project needs when they are missing (python3 venv support, redis-server)
#   - creates ./.venv with Python 3.11 and installs the exact locked Python package set
#   - installs the project itself (editable) so the `farm` CLI and the Dagster code location load
# Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.farm-installed"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      PY="$(command -v "$cand")"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
"$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_missing+=(python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${apt_missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_missing[@]}"
  else
    echo "setup: please install ${apt_missing[*]} (no apt-get on this machine)" >&2
    exit 1
  fi
fi

lock_hash="$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
# pip, quietly: only errors (and the full log when it fails) reach the terminal.
pip_quiet() {
  local log; log="$(mktemp)"
  if ! "$VENV/bin/python" -m pip "$@" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$lock_hash" ]; then
  echo "setup: .venv is up to date ($lock_hash)"
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  echo "setup: installing the locked Python packages into .venv (a few minutes the first time)"
  pip_quiet install -q --disable-pip-version-check --upgrade pip
  # The lock pins every package (direct and transitive) to the set the tests ran with.
  pip_quiet install -q --disable-pip-version-check -r requirements.lock
  pip_quiet install -q --disable-pip-version-check --no-deps -e .
  mkdir -p "$ROOT/.farm"
  echo "$lock_hash" > "$STAMP"
fi
# The compiled book (numba) is compiled once per machine and cached in .cache/numba; doing it
# here keeps the ~25 s out of the first backtest and the first test run.
echo "setup: compiling the compiled book (cached after the first time)"
# A cache written by an older book.py can hold types the new one no longer defines, and numba
# then fails while reading it: such a cache is dropped and the kernels are compiled afresh.
if ! "$VENV/bin/python" -c "from farm_dagster.engine.book import warm_up; warm_up()" 2>/dev/null; then
  echo "setup: the cached kernels did not load; compiling them afresh"
  rm -rf "$ROOT"/.cache/numba/engine_*
  "$VENV/bin/python" -c "from farm_dagster.engine.book import warm_up; warm_up()"
fi
echo "setup: done. Next: .venv/bin/farm demo"
