#!/usr/bin/env bash
# Set up (idempotent) and run `retain demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/retain demo "$@"
