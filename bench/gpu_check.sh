#!/usr/bin/env bash
# GPU readiness check for ast-audio (see bench/gpu_check.py): inference bf16 + flash SDPA, AST-base training steps
# with the full data pipeline, DataLoader throughput against step time, NCCL all-reduce. Under 5 minutes; without
# CUDA it says so in one line and exits 0.
#   bench/gpu_check.sh [--json gpu_check.json] [--workers N] [--quick]
# PYTHON picks the interpreter (default: python3 on PATH, e.g. the project's venv activated).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec timeout 300 "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
