#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: every test, slow and integration ones too,
# spread over the machine's cores (pytest-xdist). `COVERAGE=1` also measures line coverage of
# src/ (subprocesses included) and prints the per-file table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks
WORKERS=${PYTEST_WORKERS:-2}
if [ -n "${COVERAGE:-}" ]; then
  rm -f .coverage .coverage.*
  .venv/bin/python -m coverage run --data-file="$PWD/.coverage" -m pytest -q -n "$WORKERS" \
    --durations=15 "$@"
  .venv/bin/python -m coverage combine -q --data-file="$PWD/.coverage"
  .venv/bin/python -m coverage report --data-file="$PWD/.coverage"
else
  .venv/bin/python -m pytest -q -n "$WORKERS" --durations=15 "$@"
fi
