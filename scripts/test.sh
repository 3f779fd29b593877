#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: every test, slow and integration ones too,
# spread over the machine's cores (pytest-xdist; an idle worker steals queued tests).
# `COVERAGE=1` also measures line coverage of src/ (subprocesses included) and prints it per
# file; `PYTEST_WORKERS=N` sets the number of workers (0: none, in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks
.venv/bin/lint-imports  # the layer contract in pyproject.toml (docs/architecture.md)
XDIST=(-n "${PYTEST_WORKERS:-2}" --dist worksteal)
# one torch thread per process: with two workers (and the two ranks of a torchrun test) more
# threads than cores spin against each other, which doubled the suite's CPU time in CI
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
if [ -n "${COVERAGE:-}" ]; then
  rm -f .coverage .coverage.*
  .venv/bin/python -m coverage run --data-file="$PWD/.coverage" -m pytest -q "${XDIST[@]}" \
    --durations=15 "$@"
  .venv/bin/python -m coverage combine -q --data-file="$PWD/.coverage"
  .venv/bin/python -m coverage report --data-file="$PWD/.coverage"
else
  .venv/bin/python -m pytest -q "${XDIST[@]}" --durations=15 "$@"
fi
