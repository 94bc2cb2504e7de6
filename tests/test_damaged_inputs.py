"""Silent wrong results and tracebacks of issue 21, through the commands where a user meets them: a cut WAV used as a
shorter file, `embed` leaving an empty output when every input failed, damaged or edited shard folders, a LoRA rank
above the model's width, and the HEAR API's hop and input checks.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ast_audio.errors import AudioInputError, ConfigError
from ast_audio.weights.checkpoint import save_model
from conftest import run_main, tiny_model, write_tone
from fake_datasets import make_audioset, make_folder

TINY_TRAIN = ["--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--init", "none", "--num-workers",
              "0", "--no-progress", "--epochs", "1", "--batch-size", "4", "--target-length", "64"]


def one_error(err: str, *parts: str) -> None:
    """`err` holds exactly one line, the error line, and it says each of `parts`; no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: "), err
    for part in parts:
        assert part in lines[0], err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    save_model(tiny_model(seed=2, num_classes=3), folder)
    return folder


def cut_wav(path: Path, seconds: float = 2.0) -> Path:
    """A 16-bit WAV of `seconds` whose second half is cut off (its header still declares the whole length)."""
    write_tone(path, seconds=seconds)
    data = path.read_bytes()
    path.write_bytes(data[:44 + (len(data) - 44) // 2])
    return path


# ------------------------------------------------------------------------------------------------- cut WAV files


@pytest.mark.parametrize("command", [
    ["tag", "--format", "json"],
    ["events", "--no-progress"],
    ["embed", "-o", "{tmp}/e.npz"],
])
def test_a_cut_wav_warns_in_one_line_and_strict_refuses_it(ckpt, tmp_path, capsys, command):
    cut = cut_wav(tmp_path / "cut.wav")
    whole = write_tone(tmp_path / "whole.wav", seconds=1.0)
    argv = [c.replace("{tmp}", str(tmp_path)) for c in command]
    with warnings.catch_warnings():
        rc, _, err = run_main(capsys, *argv, cut, whole, "--checkpoint", ckpt)
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ast-audio: warning: {cut}: truncated WAV file"), err
    assert "declares 2.00 s of audio but only 1.00 s is present" in lines[0]
    if argv[0] == "embed":
        Path(argv[-1]).unlink()
    with warnings.catch_warnings():
        rc, out, err = run_main(capsys, *argv, cut, whole, "--checkpoint", ckpt, "--strict")
    assert rc == 1  # refused, one line naming it; the whole file is still processed
    assert err.strip().splitlines() == [f"ast-audio: {cut}: truncated WAV file: its header declares 2.00 s of audio "
                                        "but only 1.00 s is present; re-create or re-download it (the part present "
                                        "is used; --strict refuses such files)"]
    if argv[0] == "embed":
        assert list(np.load(argv[-1])["files"]) == [str(whole)]
    else:
        assert [doc["file"] for doc in json.loads(out)] == [str(whole)]


def test_a_cut_wav_in_an_archive_is_an_error_line_with_strict(ckpt, tmp_path, capsys):
    cut = cut_wav(tmp_path / "cut.wav")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{cut}\n")
    with warnings.catch_warnings():  # decoded in a DataLoader worker process
        rc, _, err = run_main(capsys, "tag", "--files-from", listing, "--output", tmp_path / "o.jsonl", "--checkpoint",
                              ckpt, "--num-workers", "1", "--strict")
    assert rc == 1, err
    (row,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["file"] == str(cut) and "truncated WAV file" in row["error"]


# -------------------------------------------------------------------------------------------------------- embed


def test_embed_writes_nothing_when_every_input_fails(ckpt, tmp_path, capsys):
    out = tmp_path / "e.npz"
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00 broken")
    rc, _, err = run_main(capsys, "embed", tmp_path / "bad.wav", tmp_path / "missing.wav", "-o", out,
                          "--checkpoint", ckpt)
    assert rc == 1 and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "none of the 2 file(s) could be embedded" in lines[-1], err
    good = write_tone(tmp_path / "good.wav", seconds=1.0)
    rc, _, err = run_main(capsys, "embed", good, "-o", out, "--checkpoint", ckpt)  # the rerun needs no --force
    assert rc == 0 and out.is_file(), err


# ------------------------------------------------------------------------------------------------------- shards


@pytest.fixture(scope="module")
def shard_data(tmp_path_factory):
    """Tar shards of 8 AudioSet-style clips (3 per shard) and the evaluation set to train with."""
    from ast_audio.cli import main

    root = tmp_path_factory.mktemp("shards")
    train_json, eval_json, label_csv = make_audioset(root / "as", classes=3, train_clips=8, eval_clips=4)
    assert main(["prepare", "--layout", "audioset", "--data", str(train_json), "--eval-data", str(eval_json),
                 "--label-csv", str(label_csv), "--out", str(root / "shards"), "--shard-size", "3"]) == 0
    return {"shards": root / "shards", "eval": eval_json, "labels": label_csv}


def _edit_table(folder: Path, name: str, value: int) -> None:
    table = dict(np.load(folder / "clips.npz"))
    table[name][0] = value
    np.savez(folder / "clips.npz", **table)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda f: _cut(f / "clips.npz"), "clips.npz: damaged clip table"),
    (lambda f: (f / "clips.npz").write_bytes(b"\x93NUMPY garbage" * 40), "clips.npz: damaged clip table"),
    (lambda f: _cut(f / "index.json"), "index.json: damaged shard index"),
    (lambda f: _edit_table(f, "size", 10**12), "is not inside its shard"),
    (lambda f: _edit_table(f, "shard", 99), "a clip in shard 99, but there are 3 shards"),
])
def test_damaged_or_edited_shards_are_refused_before_training(shard_data, tmp_path, capsys, damage, message):
    folder = shutil.copytree(shard_data["shards"], tmp_path / "shards")
    damage(folder)
    rc, _, err = run_main(capsys, "train", "--recipe", "audioset-full", "--data", folder, "--eval-data",
                          shard_data["eval"], "--label-csv", shard_data["labels"], "--out", tmp_path / "out",
                          *TINY_TRAIN)
    assert rc == 1
    error = [line for line in err.splitlines() if line.startswith("ast-audio: error: ")]
    assert len(error) == 1 and message in error[0] and "re-create the shards" in error[0], err
    assert "allow_pickle" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.csv").exists()  # refused before the first step


# --------------------------------------------------------------------------------------------------------- LoRA


def test_a_lora_rank_above_the_width_is_refused(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=3, seconds=0.5)
    rc, _, err = run_main(capsys, "train", "--recipe", "folder", "--data", data, "--out", tmp_path / "run",
                          *TINY_TRAIN, "--finetune", "lora", "--lora-rank", "5000")
    assert rc == 1
    error = [line for line in err.splitlines() if line.startswith("ast-audio: error: ")]
    assert len(error) == 1 and "--lora-rank 5000 is above the model's width of 32" in error[0], err
    assert "--lora-rank 1 .. 32" in error[0] and not (tmp_path / "run" / "model").exists()


# --------------------------------------------------------------------------------------------------------- HEAR


def test_hear_refuses_what_the_file_path_refuses():
    import ast_audio.hear as hear

    module = hear.HearModel(tiny_model())
    loud = torch.full((2, 16000), 0.1)
    loud[1, 5] = 1e4  # int-scaled float audio: refused as a float file with that peak is
    cases = [(torch.full((1, 16000), 1000, dtype=torch.int16), "audio[0]: expected float samples"),
             (torch.ones(1, 16000, dtype=torch.int64), "audio[0]: expected float samples"),
             (torch.ones(1, 16000, dtype=torch.bool), "audio[0]: expected float samples"),
             (torch.ones(1, 16000, dtype=torch.complex64), "audio[0]: expected float samples"),
             (loud, "audio[1]: peak sample is 10000")]
    for audio, message in cases:
        for embed in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
            with pytest.raises(AudioInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
                embed(audio, module)
    for hop in (1e-6, 0.009, 0.0, -1.0, float("nan"), True, "0.05"):
        with pytest.raises(ConfigError, match=r"timestamp_hop_s must be a number of seconds >= 0.01"):
            hear.HearModel(tiny_model(), timestamp_hop_s=hop)
    assert hear.HearModel(tiny_model(), timestamp_hop_s=0.01).timestamp_hop_s == 0.01
