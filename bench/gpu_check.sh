#!/usr/bin/env bash
# GPU readiness check for ast-audio (see bench/gpu_check.py): inference bf16 + flash SDPA, AST-base training steps
# with the full data pipeline, DataLoader throughput against step time, NCCL all-reduce. Under 5 minutes; without
# CUDA it says so in one line and exits 0.
#   bench/gpu_check.sh [--json gpu_check.json] [--workers N] [--quick]
# The interpreter: $PYTHON if set, else the project's venv (.venv/bin/python, as setup.sh makes it; no need to
# activate it), else python3 on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
exec timeout 300 "$python" "$here/gpu_check.py" "$@"
