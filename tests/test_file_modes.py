"""Outputs get the umask's modes (files 0o666 & ~umask, folders 0o777 & ~umask), not the 0o600 that mkstemp and
safetensors create, so a service user other than the one who wrote them can read them (issue 10, item 12).
Every command runs as a real subprocess with its own umask."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ast_audio.weights.checkpoint import save_model
from conftest import run_cli, tiny_model, write_tone
from fake_datasets import make_folder


def modes(root: Path) -> dict[str, int]:
    """Permission bits of root and of everything below it, by path relative to root's parent."""
    entries = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in entries}


def expected(root: Path, umask: int) -> dict[str, int]:
    entries = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): (0o777 if p.is_dir() else 0o666) & ~umask for p in entries}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_convert_and_tag_outputs_have_the_umask_modes(tmp_path, umask):
    save_model(tiny_model(), tmp_path / "ckpt")
    clip = write_tone(tmp_path / "clip.wav", seconds=1.0)
    for fmt in ("native", "hf"):
        run = run_cli("convert", tmp_path / "ckpt", tmp_path / fmt, "--format", fmt, umask=umask)
        assert run.returncode == 0, run.stderr
        assert modes(tmp_path / fmt) == expected(tmp_path / fmt, umask)  # model.safetensors included
        assert any(name.endswith("model.safetensors") for name in modes(tmp_path / fmt))
    run = run_cli("tag", clip, "--checkpoint", tmp_path / "native", "-o", tmp_path / "tags.txt", umask=umask)
    assert run.returncode == 0, run.stderr
    assert modes(tmp_path / "tags.txt") == {"tags.txt": 0o666 & ~umask}


def test_training_outputs_have_the_umask_modes(tmp_path):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=4)
    out = tmp_path / "out"
    umask = 0o027  # group may read, others nothing: 0o640 files, 0o750 folders
    run = run_cli("train", "--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--init", "none",
                  "--num-workers", "0", "--no-progress", "--recipe", "folder", "--data", data, "-o", out,
                  "--epochs", "1", "--batch-size", "4", "--target-length", "64", umask=umask)
    assert run.returncode == 0, run.stderr
    got = modes(out)
    assert {"out/model/model.safetensors", "out/checkpoint/model.safetensors", "out/checkpoint/train_state.pt",
            "out/best/model.safetensors", "out/metrics.csv", "out/result.json"} <= set(got)
    assert got == expected(out, umask)
