#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks
.venv/bin/lint-imports  # the layer contract in pyproject.toml (docs/architecture.md)
.venv/bin/python -m pytest -q --durations=15 "$@"
