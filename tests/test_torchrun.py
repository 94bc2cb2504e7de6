"""A real `torchrun --nproc_per_node 2` run (gloo, CPU) against one process with the same global batch.

The full-AudioSet recipe is used because it has everything that must split correctly over ranks: the weighted
(balanced) sampler, mixup partners and masks seeded per (seed, epoch, index), and evaluation gathered over ranks.
Warm-up is turned off so that the weights actually move in the few steps of the test.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ast_audio.train.engine import build_model
from ast_audio.train.recipes import make_recipe
from fake_datasets import make_audioset

pytestmark = pytest.mark.torchrun

BIN = Path(sys.executable).parent
TOL = 1e-5  # DDP averages the two ranks' mean-loss gradients; one process takes the mean over all 8 clips at once:
# equal up to float32 summation order, which Adam then carries through 6 steps


def _train(out: Path, data: tuple[Path, Path, Path], launcher: list[str]) -> subprocess.CompletedProcess:
    train_json, eval_json, label_csv = data
    args = ["train", "--recipe", "audioset-full", "--data", str(train_json), "--eval-data", str(eval_json),
            "--labels", str(label_csv), "-o", str(out), "--epochs", "2", "--batch-size", "8",
            "--target-length", "100", "--init", "none", "--device", "cpu", "--num-workers", "0", "--no-progress",
            "--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--set", "warmup=false",
            "--set", "lr=1e-3", "--set", "selection=last"]
    return subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=400,
                          env={"OMP_NUM_THREADS": "1", "PATH": str(BIN) + ":/usr/bin:/bin"})


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    data = make_audioset(tmp_path / "as", classes=4, train_clips=24, eval_clips=7)
    one = _train(tmp_path / "one", data, [str(BIN / "ast-audio")])
    assert one.returncode == 0, one.stderr
    two = _train(tmp_path / "two", data, [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
                                          "ast_audio"])
    assert two.returncode == 0, two.stderr
    assert "on 2 x cpu" in two.stderr  # both ranks joined one group (rank 0 logs)

    a, b = load_file(str(tmp_path / "one" / "model" / "model.safetensors")), \
        load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < TOL, f"max weight difference {worst}"
    # the comparison means something only if training moved the weights far beyond the tolerance
    config = make_recipe("audioset-full", init="none", target_length=100, seed=0,
                         model_config={"embed_dim": 32, "depth": 2, "num_heads": 4})
    labels = [f"c{i}" for i in range(4)]
    start = build_model(config, labels, True).state_dict()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    print(f"max |one - two| weight difference {worst:.2e}; max move from the initial weights {moved:.2e}")
    assert moved > 100 * TOL, moved  # Adam at lr 1e-3 for 6 steps moves weights by ~6e-3

    def rows(run: str) -> list[dict[str, str]]:
        with open(tmp_path / run / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    for r1, r2 in zip(rows("one"), rows("two"), strict=True):
        for key in ("train_loss", "valid_loss", "mAP", "mAUC", "acc"):
            assert float(r1[key]) == pytest.approx(float(r2[key]), abs=1e-4), key  # gathered eval = whole set
