#!/usr/bin/env bash
# Create ./.venv with the local CPU torch wheel and ast-audio (editable, with test extras), and install the
# system packages the tests need (tools/install-system-deps.sh: chromium) where they are missing.
# torch is pinned to 2.13.0 first so no later resolution can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
bash tools/install-system-deps.sh
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
