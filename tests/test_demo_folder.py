"""The folder the demo writes (`ast_audio.apps.demo.make_dataset`: train/ and test/ of class folders, `_background/`
clips of no class, `train/_mixture/` two-class clips whose labels live in train.csv) is read by every command that
takes a folder, through the real CLI: `_background` is no class, `_mixture` is skipped with a one-line warning
(issue 19 item 4: each of these commands used to stop with `IndexError: tuple index out of range`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ast_audio.apps.demo import CLASSES, make_dataset
from ast_audio.cli import main
from ast_audio.train.layouts import load_splits
from ast_audio.weights.checkpoint import load_model
from conftest import run_main, write_tone

# The demo's layout at a tenth of its size: 8 clips per class (2 of them test), 8 background clips (2 test), 4
# mixtures (train only).
CLIPS, TEST, MIXTURES = 8, 2, 4
TINY = ["--model-size", "tiny224", "--model-config", '{"embed_dim": 32, "depth": 1, "num_heads": 4}',
        "--target-length", "200"]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> dict[str, Path]:
    """A demo-written data folder and a model trained on it by `ast-audio train --recipe folder` (1 epoch)."""
    root = tmp_path_factory.mktemp("demo-folder")
    data = root / "data"
    make_dataset(data, clips_per_class=CLIPS, test_per_class=TEST, mixtures=MIXTURES)
    assert len(list((data / "train" / "_mixture").glob("*.wav"))) == MIXTURES  # the layout under test
    rc = main(["train", "--recipe", "folder", "--data", str(data), "--out", str(root / "run"), "--epochs", "1",
               "--batch-size", "8", "--no-progress", "--set", "tensorboard=false", *TINY])
    assert rc == 0
    return {"data": data, "run": root / "run", "root": root}


def class_clips(split: Path) -> list[Path]:
    """The clips a folder split holds besides `_mixture/` (counted from the files, not by the layout code)."""
    return sorted(p for p in split.glob("*/*.wav") if p.parent.name != "_mixture")


def warned_about_mixture(err: str) -> bool:
    lines = [line for line in err.splitlines() if "_mixture" in line]
    return len(lines) == 1 and lines[0].startswith("ast-audio: warning: ") and "skipped _mixture/ (4 files)" in lines[0]


def test_train_on_the_demo_folder_learns_its_four_classes_not_mixture(demo_folder):
    model = load_model(demo_folder["run"] / "model")
    assert model.labels == tuple(sorted(CLASSES))  # sorted folder names; `_background` and `_mixture` are no class
    assert model.multi_label  # background clips (all-zero targets) make the classes independent
    result = json.loads((demo_folder["run"] / "result.json").read_text())
    assert len(result["epochs"]) == 1


def test_train_prints_the_mixture_warning_once(demo_folder, capsys, tmp_path):
    rc, out, err = run_main(capsys, "train", "--recipe", "folder", "--data", demo_folder["data"], "--out",
                            tmp_path / "run", "--epochs", "1", "--batch-size", "8", "--no-progress", "--set",
                            "tensorboard=false", *TINY)
    assert rc == 0, err
    assert warned_about_mixture(err), err
    assert "Traceback" not in err


def test_prepare_reads_every_class_and_background_clip_once(demo_folder, capsys, tmp_path):
    data = demo_folder["data"]
    keys = []
    for split in ("train", "valid"):  # the holdout splits train/ in two; together they are the whole folder
        rc, out, err = run_main(capsys, "prepare", "--layout", "folder", "--data", data, "--split", split, "--out",
                                tmp_path / split)
        assert rc == 0, err
        assert warned_about_mixture(err), err
        index = json.loads((tmp_path / split / "index.json").read_text())
        assert index["labels"] == sorted(CLASSES) and index["multi_label"]
        keys += _clip_keys(tmp_path / split)
    expected = [f"{p.parent.name}/{p.name}" for p in class_clips(data / "train")]
    assert sorted(keys) == expected
    assert len(expected) == 4 * (CLIPS - TEST) + (CLIPS - TEST)  # four classes and the background


def _clip_keys(folder: Path) -> list[str]:
    """The clip keys (paths relative to the class folders' parent) of a prepared folder's clips.npz."""
    import numpy as np

    return [k.decode() for k in np.load(folder / "clips.npz", allow_pickle=False)["key"]]


def test_stats_reads_the_demo_folder(demo_folder, capsys):
    rc, out, err = run_main(capsys, "stats", "--layout", "folder", "--data", demo_folder["data"], "--batch-size",
                            "4", "--target-length", "200")
    assert rc == 0, err
    assert warned_about_mixture(err), err
    stats = json.loads(out)
    splits = load_splits("folder", demo_folder["data"])
    assert stats["clips"] == len(splits.train) > 0 and stats["skipped"] == 0


def test_eval_scores_the_demo_folders_test_split(demo_folder, capsys):
    data = demo_folder["data"]
    rc, out, err = run_main(capsys, "eval", "--checkpoint", demo_folder["run"] / "model", "--layout", "folder",
                            "--data", data)
    assert rc == 0, err
    result = json.loads(out)
    assert result["split"] == "test" and result["classes"] == len(CLASSES)
    assert result["clips"] == len(class_clips(data / "test")) == 4 * TEST + TEST


def test_calibrate_on_the_demo_folder_writes_one_threshold_per_class(demo_folder, capsys, tmp_path):
    rc, out, err = run_main(capsys, "calibrate", "--checkpoint", demo_folder["run"] / "model", "--layout", "folder",
                            "--data", demo_folder["data"], "--output", tmp_path / "thresholds.csv")
    assert rc == 0, err
    assert warned_about_mixture(err), err
    with open(tmp_path / "thresholds.csv", newline="") as f:
        assert sorted(row["label"] for row in csv.DictReader(f)) == sorted(CLASSES)


def test_underscore_folders_other_than_background_are_skipped(tmp_path):
    """The rule of docs/training-data.md on a hand-made folder: `_background` clips have no class, any other
    `_name/` folder is no class and is left out (with a warning naming it), `.hidden/` is ignored silently."""
    for folder, n in (("dog", 3), ("cat", 3), ("_background", 2), ("_unsorted", 2), (".cache", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            write_tone(tmp_path / folder / f"{i}.wav", seconds=0.2)
    with pytest.warns(UserWarning, match=r"skipped _unsorted/ \(2 files\)"):
        splits = load_splits("folder", tmp_path)
    assert splits.train.labels == ("cat", "dog")
    keys = sorted({e.key for e in splits.train.examples + splits.valid.examples})
    assert keys == ["_background/0.wav", "_background/1.wav", "cat/0.wav", "cat/1.wav", "cat/2.wav", "dog/0.wav",
                    "dog/1.wav", "dog/2.wav"]
    assert {e.targets for e in splits.train.examples + splits.valid.examples if e.key.startswith("_")} == {()}


def test_the_demo_manifest_still_reads_the_mixtures_with_their_labels(demo_folder):
    """train.csv, not the folders, is where the mixtures' two labels are: read through it they are two-label
    clips of the four classes."""
    splits = load_splits("folder", demo_folder["data"] / "train.csv",
                         eval_data=str(demo_folder["data"] / "test.csv"))
    mixtures = [e for e in splits.train.examples if "_mixture" in e.key]
    assert len(mixtures) == MIXTURES and all(len(e.targets) == 2 for e in mixtures)
