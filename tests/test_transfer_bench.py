"""`python -m ast_audio.bench.transfer` as the docs run it, with a relative --out (issue 19 item 5: the manifests
held paths relative to the working directory, which the folder layout resolves against the manifest's folder, so
every path came out doubled: runs/t/data/runs/t/data/source/...)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ast_audio.apps.demo import THREADS


@pytest.mark.slow
def test_transfer_bench_with_a_relative_out(tmp_path):
    """The smoke run (--quick, one mode) from another working directory: it finishes, every manifest names files
    that exist when read from the manifest's folder, and it says its fixed thread count."""
    proc = subprocess.run([sys.executable, "-m", "ast_audio.bench.transfer", "--out", "runs/transfer", "--quick",
                           "--modes", "linear"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "transfer"
    assert "| linear |" in (out / "transfer.md").read_text()
    assert f"every process on {THREADS} torch thread" in proc.stdout
    manifests = sorted((out / "data").glob("*.csv"))
    assert len(manifests) == 4  # source, source_valid, target_test, target_8_0
    for manifest in manifests:
        with open(manifest, newline="") as f:
            paths = [Path(row["path"]) for row in csv.DictReader(f)]
        assert paths and all(not p.is_absolute() and (manifest.parent / p).is_file() for p in paths), manifest
