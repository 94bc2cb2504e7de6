"""One vocabulary across commands (docs/cli.md): every parser is checked for the shared options, old spellings work as
hidden aliases with one deprecation line, the overwrite rule, --device, progress lines, and `train --resume --epochs`
extending a finished run; all through the real command line (`ast_audio.cli.main`)."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch

from ast_audio import AST
from ast_audio.cli.main import build_parser
from ast_audio.weights.checkpoint import save_model
from conftest import run_main, tiny_model, write_tone
from fake_datasets import make_folder

MODEL_COMMANDS = ("tag", "events", "embed", "explain", "serve", "listen", "calibrate", "eval", "train")
# Commands that write a file or folder: -o/--output (positional OUT too where noted in docs/cli.md) and --force.
WRITING_COMMANDS = ("tag", "events", "embed", "explain", "calibrate", "eval", "train", "average", "demo", "prepare",
                    "convert", "export", "scenes")
PROGRESS_COMMANDS = ("stats", "calibrate", "eval", "events", "train")
TOP_K_COMMANDS = ("tag", "events", "explain", "listen")
OLD_SPELLINGS = ("--label-csv", "--batch", "--out", "--plot-classes", "--workers")
CLASSES = ("chirp", "noise", "tone")  # a folder layout's classes, sorted


def _visible_options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_parser_speaks_one_vocabulary():
    commands = _commands()
    for name, parser in commands.items():
        visible = _visible_options(parser)
        assert not visible & set(OLD_SPELLINGS), (name, visible & set(OLD_SPELLINGS))
        if "--labels" in visible or "--data" in visible:
            assert "--labels" in visible, name  # one name for a class-label CSV
    for name in MODEL_COMMANDS:
        assert "--device" in _visible_options(commands[name]), name
    for name in WRITING_COMMANDS:
        assert {"-o", "--output", "--force"} <= _visible_options(commands[name]), name
    for name in PROGRESS_COMMANDS:
        assert "--no-progress" in _visible_options(commands[name]), name
    for name in TOP_K_COMMANDS:
        assert "--top-k" in _visible_options(commands[name]), name
    # --format is an output format only: prepare's audio encoding is --audio-format, as in scenes
    assert "--format" not in _visible_options(commands["prepare"])
    assert "--audio-format" in _visible_options(commands["prepare"]) & _visible_options(commands["scenes"])
    assert "--batch-size" in _visible_options(commands["bench"])


@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["train", "--recipe", "folder", "--data", "d", "--label-csv", "L.csv"], "labels", "L.csv", "--label-csv",
     "--labels"),
    (["train", "--recipe", "folder", "--data", "d", "--out", "runs/x"], "output", "runs/x", "--out", "--output"),
    (["average", "a", "b", "--out", "wa"], "output", "wa", "--out", "--output"),
    (["demo", "--out", "d"], "output", "d", "--out", "--output"),
    (["prepare", "--data", "d", "-o", "s", "--format", "wav"], "audio_format", "wav", "--format", "--audio-format"),
    (["bench", "--batch", "3"], "batch_size", 3, "--batch", "--batch-size"),
    (["events", "f.wav", "--plot-classes", "7"], "top_k", 7, "--plot-classes", "--top-k"),
    (["tag", "--files-from", "L", "-o", "x", "--workers", "0"], "num_workers", 0, "--workers", "--num-workers"),
    (["stats", "--data", "d", "--workers", "1"], "num_workers", 1, "--workers", "--num-workers"),
    (["eval", "--checkpoint", "c", "--layout", "folder", "--data", "d", "--label-csv", "L.csv"], "labels", "L.csv",
     "--label-csv", "--labels"),
])
def test_old_spellings_still_work_with_one_warning(argv, dest, value, old, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == f"ast-audio: warning: {old} is deprecated; use {new}\n"


def test_new_spellings_do_not_warn(capsys):
    args = build_parser().parse_args(["train", "--recipe", "folder", "--data", "d", "--labels", "L.csv", "-o", "r"])
    assert (args.labels, args.output) == ("L.csv", "r") and capsys.readouterr().err == ""


def test_positional_outputs_and_output_option_are_one(tmp_path, capsys):
    assert build_parser().parse_args(["scenes", "x"]).out == "x"
    assert build_parser().parse_args(["scenes", "-o", "x"]).output == "x"
    rc, _, err = run_main(capsys, "scenes", "a", "-o", "b")
    assert rc == 1 and "not both" in err and err.count("\n") == 1
    rc, _, err = run_main(capsys, "average", "x", "y")
    assert rc == 1 and "-o/--output" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny multi-label model over the folder layout's classes, saved as a native checkpoint."""
    root = tmp_path_factory.mktemp("vocab")
    base = tiny_model(seed=1, num_classes=len(CLASSES))
    model = AST(base.config, frontend=base.frontend, labels=CLASSES, multi_label=True)
    model.load_state_dict(base.state_dict())
    save_model(model, root / "ckpt")
    return root / "ckpt"


@pytest.mark.parametrize("command", ["tag", "events"])
def test_existing_output_is_refused_without_force(command, checkpoint, tmp_path, capsys):
    wav = write_tone(tmp_path / "tone.wav", seconds=2.0)
    out = tmp_path / "result.txt"
    out.write_text("keep me\n")
    rc, _, err = run_main(capsys, command, wav, "--checkpoint", checkpoint, "-o", out)
    assert rc == 1 and err.startswith("ast-audio: error:") and "--force" in err and err.count("\n") == 1
    assert out.read_text() == "keep me\n"
    rc, _, err = run_main(capsys, command, wav, "--checkpoint", checkpoint, "-o", out, "--force")
    assert rc == 0, err
    assert out.read_text() != "keep me\n"


def test_device_cpu_runs_and_missing_cuda_is_one_line(checkpoint, tmp_path, capsys):
    wav = write_tone(tmp_path / "tone.wav", seconds=2.0)
    rc, out, err = run_main(capsys, "tag", wav, "--checkpoint", checkpoint, "--device", "cpu", "--format", "json")
    assert rc == 0, err
    assert json.loads(out)[0]["labels"] if isinstance(json.loads(out), list) else json.loads(out)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device error cannot be seen here")
    for command in (["tag", wav], ["events", wav], ["embed", wav, "-o", tmp_path / "e.npz"],
                    ["explain", wav, "-o", tmp_path / "x.png"]):
        rc, _, err = run_main(capsys, *command, "--checkpoint", checkpoint, "--device", "cuda")
        assert rc == 1 and err.count("\n") == 1, (command, err)
        assert "no CUDA device is available" in err and "--device cpu" in err


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("vocab-data") / "data", classes=CLASSES, clips_per_class=4)


def _progress_lines(err: str, what: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"ast-audio: {what}: ")]


@pytest.mark.parametrize("what, argv", [
    ("stats", ["stats", "--layout", "folder", "--batch-size", "2", "--target-length", "100"]),
    ("eval", ["eval", "--checkpoint", "CKPT", "--layout", "folder", "--batch-size", "2", "--split", "valid"]),
    ("calibrate", ["calibrate", "--checkpoint", "CKPT", "--split", "all", "-o", "OUT"]),
])
def test_long_commands_report_progress_unless_told_not_to(what, argv, checkpoint, folder_data, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("AST_AUDIO_PROGRESS_EVERY", "0")  # a line on every update instead of every 5 s
    argv = [str(checkpoint) if a == "CKPT" else a for a in argv] + ["--data", str(folder_data)]
    rc, _, err = run_main(capsys, *[str(tmp_path / "a.csv") if a == "OUT" else a for a in argv])
    assert rc == 0, err
    lines = _progress_lines(err, what)
    assert len(lines) >= 2, err
    done, total = lines[-1].split(": ")[2].split()[0].split("/")
    assert 0 < int(done) <= int(total)
    rc, _, err = run_main(capsys, *[str(tmp_path / "b.csv") if a == "OUT" else a for a in argv], "--no-progress")
    assert rc == 0 and _progress_lines(err, what) == [], err


def test_events_on_a_long_file_reports_progress(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AST_AUDIO_PROGRESS_EVERY", "0")
    wav = write_tone(tmp_path / "long.wav", seconds=20.0)
    fewer = ("--batch-size", "4", "--hop", "0.5")  # 40 windows in 10 batches instead of the default hop's 300
    rc, _, err = run_main(capsys, "events", wav, "--checkpoint", checkpoint, *fewer)
    assert rc == 0, err
    lines = _progress_lines(err, "long.wav")
    assert len(lines) > 1 and lines[-1].startswith("ast-audio: long.wav: 20/20 s of audio (100%)"), err
    rc, _, err = run_main(capsys, "events", wav, "--checkpoint", checkpoint, *fewer, "--no-progress")
    assert rc == 0 and _progress_lines(err, "long.wav") == []


TINY_TRAIN = ["--recipe", "folder", "--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--init",
              "none", "--num-workers", "0", "--no-progress", "--batch-size", "4", "--target-length", "100"]


def _epochs(run) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_resume_extends_a_finished_run_with_more_epochs(folder_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", run, "--epochs", "2")
    assert rc == 0, err
    first = _epochs(run)
    assert first == [1, 2]
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", run, "--resume")
    assert rc == 0, err  # without --epochs: the run's own 2 epochs, nothing more to train
    assert _epochs(run) == [1, 2]
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", run, "--epochs", "4",
                          "--resume")
    assert rc == 0, err
    assert "after epoch 2" in err
    assert _epochs(run) == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["epochs"] == 4
    # Without --resume the run is refused; --force starts over.
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", run, "--epochs", "1")
    assert rc == 1 and "--force" in err and "--resume" in err
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", run, "--epochs", "1",
                          "--force")
    assert rc == 0, err
    assert _epochs(run) == [1]


def test_force_never_removes_a_folder_that_is_not_a_run(folder_data, tmp_path, capsys):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("precious")
    rc, _, err = run_main(capsys, "train", *TINY_TRAIN, "--data", folder_data, "-o", other, "--epochs", "1",
                          "--force")
    assert rc == 0, err
    assert (other / "mine.txt").read_text() == "precious" and _epochs(other) == [1]
