"""A full disk while writing outputs: one line naming the path, the space needed and the space free; nothing
half-written left; a training run keeps its last good checkpoint and lists only saved epochs (issue 10, item 8).

The end-to-end tests write to a real, small tmpfs (mounting one needs root, which runs this suite here; they are
skipped only where mounting is impossible). The tests after them raise the errors a full disk causes (ENOSPC from
a write, safetensors' SafetensorError, torch.save's errno-less RuntimeError) from the real call sites, so the logic
is covered everywhere.
"""

from __future__ import annotations

import csv
import errno
import shutil
import subprocess
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ast_audio.cli import main
from ast_audio.errors import OutputError
from ast_audio.utils import atomic_write_text, state_nbytes
from ast_audio.weights.checkpoint import save_model
from conftest import run_cli, tiny_model, write_tone
from fake_datasets import make_folder

TRAIN = ["--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--init", "none", "--num-workers", "0",
         "--no-progress", "--recipe", "folder", "--epochs", "2", "--batch-size", "4", "--target-length", "100",
         "--seed", "7"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("ast-audio:")]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 8 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the simulated tests below cover the logic")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the simulated tests below cover the logic")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until only about `leave` bytes are free on `disk` (0: until the write fails)."""
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    with open(filler, "wb") as f:
        try:
            remaining = shutil.disk_usage(disk).free - leave
            while remaining > 0:
                f.write(b"\0" * min(remaining, 1 << 20))
                f.flush()
                remaining = shutil.disk_usage(disk).free - leave
        except OSError as exc:
            assert exc.errno == errno.ENOSPC and leave == 0
    return filler


# ---------------------------------------------------------------------------------------------------------------------
# A real full disk


@pytest.mark.slow
def test_train_onto_a_disk_that_fills_during_epoch_2(small_disk, tmp_path):
    """The disk fills once epoch 1's checkpoint is written: epoch 2 cannot be saved -> exit 1, one line naming the
    checkpoint folder and the free space, checkpoint/ still epoch 1, metrics.csv only epoch 1, no temporary folder
    left. With space again, --resume continues after epoch 1 and ends with an uninterrupted run's weights."""
    data = make_folder(tmp_path / "data", classes=("tone", "chirp", "noise"), clips_per_class=6)
    out = small_disk / "out"
    state = out / "checkpoint" / "train_state.pt"

    def fill_after_epoch_1() -> None:  # a black-box observer: the run's own files, nothing inside it
        deadline = time.monotonic() + 240
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        fill(small_disk, leave=300_000)  # room for epoch 2's best/ (150 KiB) and metrics, not for a 500 KiB checkpoint

    observer = threading.Thread(target=fill_after_epoch_1)
    observer.start()
    run = run_cli("train", *TRAIN, "--data", data, "-o", out)
    observer.join()
    assert run.returncode == 1, run.stderr
    (line,) = _error_lines(run.stderr)
    assert line.startswith(f"ast-audio: error: epoch 2 not saved: cannot write {out / 'checkpoint'}: the disk is full")
    assert "KiB needed" in line and f"free in {out}" in line and "`--resume` continues from it" in line
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1"]
    assert not list(out.glob(".checkpoint*"))  # no partial checkpoint left behind

    for filler in small_disk.glob("filler*"):
        filler.unlink()
    resumed = run_cli("train", *TRAIN, "--data", data, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch 1" in resumed.stderr
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2"]
    reference = tmp_path / "reference"
    assert main(["train", *TRAIN, "--data", str(data), "-o", str(reference)]) == 0
    a, b = load_file(str(reference / "checkpoint" / "model.safetensors")), load_file(str(out / "checkpoint" /
                                                                                         "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_convert_onto_a_full_disk(small_disk, tmp_path):
    save_model(tiny_model(), tmp_path / "ckpt")
    fill(small_disk, leave=64 * 1024)  # the 150 KiB safetensors file does not fit
    out = small_disk / "converted"
    run = run_cli("convert", tmp_path / "ckpt", out, "--format", "native")
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"ast-audio: error: cannot write {out}: the disk is full (about ")
    assert f"KiB free in {small_disk})" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler0"]  # no output, no temporary folder


def test_tag_output_onto_a_full_disk(small_disk, tmp_path):
    save_model(tiny_model(), tmp_path / "ckpt")
    clip = write_tone(tmp_path / "clip.wav", seconds=1.0)
    fill(small_disk)
    out = small_disk / "tags.json"
    run = run_cli("tag", clip, "--checkpoint", tmp_path / "ckpt", "--format", "json", "-o", out)
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"ast-audio: error: cannot write {out}: the disk is full") and "[Errno" not in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler0"]


# ---------------------------------------------------------------------------------------------------------------------
# The same errors raised at the real call sites (no filesystem limit needed)


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_save_model_enospc_names_folder_needed_and_free(tmp_path, monkeypatch):
    from ast_audio.weights import checkpoint

    model = tiny_model()
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    with pytest.raises(OutputError) as info:
        save_model(model, tmp_path / "m")
    text = str(info.value)
    needed = state_nbytes(model.state_dict()) / 1024  # the tensors' bytes: what the weights file needs
    assert text.startswith(f"cannot write {tmp_path / 'm'}: the disk is full (about {needed:.1f} KiB needed, ")
    assert f"free in {tmp_path})" in text and "\n" not in text
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary folder left


def test_safetensors_error_text_is_recognised(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from ast_audio.weights import checkpoint

    def failing(*_args, **_kwargs):  # what save_file raised on the real tmpfs
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", failing)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'hf'}: the disk is full"):
        checkpoint.save_hf(tiny_model(), tmp_path / "hf")


def test_text_output_enospc_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", _no_space)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'out.json'}: the disk is full \(about 5 bytes"):
        atomic_write_text(tmp_path / "out.json", "hello")
    assert list(tmp_path.iterdir()) == []


Usage = namedtuple("Usage", "total used free")
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # torch.save on the tmpfs


def _torch_save_failing_at_epoch_2(monkeypatch) -> None:
    real = torch.save

    def save(obj, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            raise RuntimeError(TORCH_FULL_DISK)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_train_torch_save_failure_on_a_full_disk(tmp_path, monkeypatch, capsys):
    """torch.save's RuntimeError carries no errno: with the disk (reported) full right after it, epoch 2 is reported
    not saved in one line, checkpoint/ keeps epoch 1 and metrics.csv lists epoch 1 only."""
    import ast_audio.utils

    data = make_folder(tmp_path / "data", classes=("tone", "chirp", "noise"), clips_per_class=6)
    out = tmp_path / "out"
    _torch_save_failing_at_epoch_2(monkeypatch)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(ast_audio.utils.shutil, "disk_usage",
                        lambda p: Usage(*real_usage(p)[:2], 4096) if Path(p) == out else real_usage(p))
    capsys.readouterr()
    assert main(["train", *TRAIN, "--data", str(data), "-o", str(out)]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"ast-audio: error: epoch 2 not saved: cannot write {out / 'checkpoint'}: the disk is "
                           "full (about ") and f"4.0 KiB free in {out})" in line
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1"]
    assert not list(out.glob(".checkpoint*"))


def test_runtime_error_with_free_space_is_not_called_a_full_disk(tmp_path, monkeypatch):
    """The same RuntimeError with space free is some other failure: it propagates unchanged, not misreported."""
    from ast_audio.train.checkpointing import save_checkpoint

    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(TORCH_FULL_DISK)))
    if shutil.disk_usage(tmp_path).free <= 1 << 20:
        pytest.skip("this disk really is full")
    with pytest.raises(RuntimeError) as info:
        save_checkpoint(tmp_path / "checkpoint", tiny_model(), {"epoch": 1})
    assert not isinstance(info.value, OutputError) and str(info.value) == TORCH_FULL_DISK
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_name_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=rf"^cannot write {blocker / 'out.json'}: {blocker} is a file, not a folder"):
        atomic_write_text(blocker / "out.json", "{}")
