"""Normalisation statistics (reference get_norm_stats) and the `ast-audio stats` / `ast-audio prepare` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ast_audio import FrontendConfig
from ast_audio.cli import main
from ast_audio.errors import ConfigError
from ast_audio.train.data import ClipDataset
from ast_audio.train.layouts import Example, Manifest, load_splits
from ast_audio.train.recipes import AugmentConfig
from ast_audio.train.shards import is_shard_folder
from ast_audio.train.stats import compute_stats, norm_stats
from conftest import run_cli
from fake_datasets import make_folder

FRONT = FrontendConfig(target_length=60)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("stats") / "f", classes=("tone", "noise"), clips_per_class=5,
                       seconds=0.5)


def _numpy_reference(items: list[np.ndarray], batch_size: int) -> tuple[float, float]:
    """get_norm_stats from its definition: per batch the mean and unbiased std over all elements, then averages."""
    means, stds = [], []
    for start in range(0, len(items), batch_size):
        batch = np.stack(items[start:start + batch_size]).astype(np.float64)
        means.append(batch.mean())
        stds.append(batch.std(ddof=1))
    return float(np.mean(means)), float(np.mean(stds))


@pytest.mark.parametrize("batch_size", [3, 100])
def test_compute_stats_is_the_mean_of_per_batch_statistics(data_root, batch_size):
    manifest = load_splits("folder", data_root, holdout=0.2).train  # 8 clips
    aug = AugmentConfig(mixup=0.5, freqm=20, timem=12)
    ds = ClipDataset(manifest, FRONT, aug, seed=2, normalize=False)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(5)).tolist()  # the documented order
    items = [ds[i][0].numpy() for i in order]  # items depend on (seed, epoch, index) only, not on the loader
    mean, std = compute_stats(ds, batch_size=batch_size, seed=5)
    ref_mean, ref_std = _numpy_reference(items, batch_size)
    assert mean == pytest.approx(ref_mean, abs=1e-9) and std == pytest.approx(ref_std, abs=1e-9)  # float64 sums
    limited = norm_stats(ds, batch_size=3, num_batches=2, seed=5)
    assert limited.batches == 2 and limited.clips == 6
    assert limited.mean == pytest.approx(_numpy_reference(items[:6], 3)[0], abs=1e-9)


def test_stats_skip_bad_clips_and_need_unnormalised_features(data_root, tmp_path):
    manifest = load_splits("folder", data_root, holdout=0.2).train
    missing = Example(str(tmp_path / "gone.wav"), (0,), "gone.wav")
    with_bad = Manifest(manifest.examples + (missing,), manifest.labels, manifest.mids, False)
    good = norm_stats(ClipDataset(manifest, FRONT, normalize=False), batch_size=100)
    result = norm_stats(ClipDataset(with_bad, FRONT, normalize=False), batch_size=100)
    assert result.skipped == 1 and str(tmp_path / "gone.wav") in result.bad[0].error and result.clips == 8
    assert result.mean == pytest.approx(good.mean, abs=1e-12)  # the bad clip is dropped, not replaced
    with pytest.raises(ConfigError, match="normalize=False"):
        compute_stats(ClipDataset(manifest, FRONT))


def test_stats_command(data_root):
    proc = run_cli("stats", "--layout", "folder", "--data", str(data_root), "--mixup", "0", "--freqm", "10",
                "--timem", "8", "--target-length", "60", "--batch-size", "4", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    manifest = load_splits("folder", data_root, holdout=0.2, seed=1).train
    ds = ClipDataset(manifest, FRONT, AugmentConfig(freqm=10, timem=8), seed=1, normalize=False)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)).tolist()
    ref_mean, ref_std = _numpy_reference([ds[i][0].numpy() for i in order], 4)
    assert out["clips"] == 8 and out["skipped"] == 0 and out["batches"] == 2
    assert out["mean"] == pytest.approx(ref_mean, abs=1e-9) and out["std"] == pytest.approx(ref_std, abs=1e-9)


def test_prepare_command_and_stats_on_shards(data_root, tmp_path):
    out_dir = tmp_path / "shards"
    proc = run_cli("prepare", "--layout", "folder", "--data", str(data_root), "--split", "valid", "-o",
                str(out_dir), "--shard-size", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"out": str(out_dir), "clips": 2, "shards": 2, "skipped": 0}
    assert is_shard_folder(out_dir)
    proc = run_cli("stats", "--data", str(out_dir), "--recipe", "esc50", "--target-length", "60")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clips"] == 2


def test_commands_report_bad_paths_in_one_line(data_root, tmp_path, capsys):
    proc = run_cli("stats", "--layout", "esc50", "--data", str(tmp_path / "nowhere"), "--fold", "1")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error:") and str(tmp_path / "nowhere") in lines[0]
    # A clip that cannot be decoded: reported with its path, the rest is processed, exit 1 at the end.
    bad = tmp_path / "data"
    make_folder(bad / "train", classes=("a", "b"), clips_per_class=3, seconds=0.3)
    make_folder(bad / "valid", classes=("a", "b"), clips_per_class=1, seconds=0.3)
    broken = bad / "train" / "a" / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    assert main(["prepare", "--layout", "folder", "--data", str(bad), "-o", str(tmp_path / "s")]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"out": str(tmp_path / "s"), "clips": 6, "shards": 1, "skipped": 1}
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error:") and str(broken) in lines[0]
