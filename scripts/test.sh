#!/usr/bin/env bash
# The test command: makes sure the environment is set up (idempotent), checks lint and format,
# then runs the whole suite (slow end-to-end tests included) on two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -n 2 --timeout 600 "$@"
