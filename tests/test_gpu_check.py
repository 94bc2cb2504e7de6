"""bench/gpu_check.sh on a machine without CUDA (this one, or any with CUDA hidden): one line, exit 0, no JSON."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu.json"
    run = subprocess.run(["bash", str(SCRIPT), "--json", str(out)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), run.stdout
    assert not out.exists()


def test_gpu_check_uses_the_project_venv_without_activation(tmp_path):
    """With no $PYTHON and the venv not activated, the script runs the project's .venv/bin/python, not whatever
    python3 PATH has first (which lacks torch: ModuleNotFoundError)."""
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "bench" / "gpu_check.sh")
    (repo / "bench" / "gpu_check.py").symlink_to(SCRIPT.with_suffix(".py"))
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    other = tmp_path / "path"  # the python3 a shell without the venv finds first
    other.mkdir()
    (other / "python3").write_text("#!/bin/sh\necho 'not the project venv' >&2\nexit 3\n")
    (other / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=f"{other}{os.pathsep}/usr/bin{os.pathsep}/bin", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    run = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("gpu_check: no CUDA device"), run.stdout
