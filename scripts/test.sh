#!/usr/bin/env bash
# The test command: makes sure the environment is set up (idempotent), then runs the whole suite
# (slow end-to-end tests included) on two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --timeout 600 "$@"
