"""`ast-audio events / calibrate / explain` and `tag --thresholds/--only/--exclude`, run as the real script."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import f1_score

from ast_audio import AST
from ast_audio.audio.io import load_audio
from ast_audio.infer.events import Energy, EventConfig, detect_events
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_cli, run_main, tiny_model, write_tone
from helpers import brute_force_timeline, peak_rss, train_tone_detector, write_noise_file

LABELS = ("chirp", "noise", "tone")  # the folder layout sorts class names


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("events_cli")
    base = tiny_model(seed=2, num_classes=3)
    model = AST(base.config, frontend=base.frontend, labels=LABELS, multi_label=True)
    model.load_state_dict(base.state_dict())
    save_model(model, root / "ckpt")
    rng = np.random.default_rng(0)
    scene = 0.1 * rng.standard_normal((22050 * 9, 2))
    scene[22050 * 3:22050 * 5] += 0.4 * np.sin(2 * np.pi * 1000 * np.arange(22050 * 2) / 22050)[:, None]
    sf.write(str(root / "scene.flac"), scene.astype(np.float32), 22050)
    write_tone(root / "tone.wav", seconds=3.0, freq=700.0)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return {"root": root, "ckpt": root / "ckpt", "scene": root / "scene.flac", "tone": root / "tone.wav",
            "broken": root / "broken.wav"}


# A low threshold with this untrained model gives events in every format (its sigmoid scores sit near 0.5).
OPTIONS = ("--window", "1.0", "--hop", "0.25", "--threshold", "0.45", "--hysteresis", "0.9", "--median", "3")


def library_events(setup, path: Path) -> list:
    """The events expected with OPTIONS and the command's defaults for the rest (the overlap-add mean grid,
    interpolated boundaries, energy refinement), from window scores computed independently of the command's
    pipeline: the file decoded whole and every window run through the model on its own (`brute_force_timeline`);
    `detect_events` itself is checked against hand-made scores in test_events.py."""
    model = load_model(setup["ckpt"])
    timeline = brute_force_timeline(model, load_audio(path, sample_rate=model.frontend.sample_rate), 1.0, 0.25)
    config = EventConfig(threshold=0.45, hysteresis=0.9, median_windows=3, grid="mean", interpolate=True,
                         refine="energy")
    return detect_events(timeline, config, Energy.from_file(path, model.frontend.sample_rate))


def test_events_json_csv_equal_library_and_bad_file_skipped(setup):
    expected = library_events(setup, setup["scene"])
    assert expected  # the options above do produce events
    run = run_cli("events", setup["scene"], setup["broken"], "--checkpoint", setup["ckpt"], *OPTIONS)
    assert run.returncode == 1  # a bad file -> exit 1 at the end, the good one is still reported
    assert f"{setup['broken']}:" in run.stderr and "Traceback" not in run.stderr
    doc = json.loads(run.stdout)
    assert [d["file"] for d in doc] == [str(setup["scene"])]
    assert doc[0]["duration_s"] == pytest.approx(9.0) and doc[0]["hop_s"] == pytest.approx(0.25)
    got = [(e["label"], e["onset_s"], e["offset_s"], e["score"]) for e in doc[0]["events"]]
    assert got == [(e.label, round(e.onset_s, 6), round(e.offset_s, 6), round(e.score, 6)) for e in expected]

    run = run_cli("events", setup["scene"], setup["tone"], "--checkpoint", setup["ckpt"], *OPTIONS,
                  "--format", "csv")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert set(rows[0]) == {"file", "label", "onset", "offset", "score"}
    scene_rows = [r for r in rows if r["file"] == str(setup["scene"])]
    assert [(r["label"], float(r["onset"]), float(r["offset"])) for r in scene_rows] == [
        (e.label, pytest.approx(e.onset_s, abs=1e-6), pytest.approx(e.offset_s, abs=1e-6)) for e in expected]
    assert {r["file"] for r in rows} <= {str(setup["scene"]), str(setup["tone"])}
    assert run.stdout.count("file,label,onset,offset,score") == 1  # one header for all files


def test_events_audacity_srt_files_and_plot(setup, tmp_path):
    expected = library_events(setup, setup["scene"])
    out = tmp_path / "labels.txt"
    plot = tmp_path / "timeline.png"
    run = run_cli("events", setup["scene"], "--checkpoint", setup["ckpt"], *OPTIONS, "--format", "audacity",
                  "-o", out, "--plot", plot)
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert [(float(a), float(b), c) for a, b, c in (line.split("\t") for line in lines)] == [
        (pytest.approx(e.onset_s, abs=1e-6), pytest.approx(e.offset_s, abs=1e-6), e.label) for e in expected]
    assert png_size(plot.read_bytes()) == (1200, 500)

    folder = tmp_path / "srt"
    run = run_cli("events", setup["scene"], setup["tone"], "--checkpoint", setup["ckpt"], *OPTIONS,
                  "--format", "srt", "-o", folder)
    assert run.returncode == 0, run.stderr
    text = (folder / "scene.srt").read_text()
    times = re.findall(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+) \(\d\.\d\d\)$", text, re.M)
    assert len(times) == len(expected) and [int(t[0]) for t in times] == list(range(1, len(expected) + 1))
    for (_, a, b, label), e in zip(times, expected, strict=True):
        seconds = [int(x[:2]) * 3600 + int(x[3:5]) * 60 + int(x[6:8]) + int(x[9:]) / 1000 for x in (a, b)]
        assert label == e.label and seconds == pytest.approx([e.onset_s, e.offset_s], abs=5.01e-4)
    assert (folder / "tone.srt").exists()


def test_events_filters_and_threshold_errors(setup, tmp_path, capsys):
    rc, out, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["ckpt"], *OPTIONS,
                            "--only", "tone,chirp", "--exclude", "chirp")
    assert rc == 0, err
    assert {e["label"] for e in json.loads(out)[0]["events"]} <= {"tone"}
    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["ckpt"], "--only", "Tone")
    assert rc == 1 and err.count("\n") == 1
    assert "unknown class name(s) 'Tone'" in err and "'chirp'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("label,threshold\ntone,0.3\nspeech,0.5\n")
    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["ckpt"], "--thresholds", bad)
    assert rc == 1 and "'speech'" in err and "Traceback" not in err
    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["ckpt"], "--median", "4")
    assert rc == 2 and "odd" in err


def test_progress_on_stderr_for_long_files(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AST_AUDIO_PROGRESS_EVERY", "0")  # a line per batch instead of one every 5 s
    long = write_tone(tmp_path / "long.wav", seconds=61.0)
    args = ("events", long, "--checkpoint", setup["ckpt"], "--window", "1.28", "--hop", "1.28", "--batch-size", "16")
    rc, out, err = run_main(capsys, *args)
    assert rc == 0 and json.loads(out)[0]["duration_s"] == pytest.approx(61.0)
    # Progress over audio seconds, on stderr (stderr is not a terminal here: lines, not a bar).
    assert "ast-audio: long.wav: " in err and "/61 s of audio" in err
    rc, out, err = run_main(capsys, *args, "--no-progress")
    assert rc == 0 and err == ""


def test_calibrate_then_events_and_tag_use_the_thresholds(setup, tmp_path):
    from ast_audio.train.layouts import load_splits
    from fake_datasets import make_folder

    data = make_folder(tmp_path / "data", clips_per_class=6)
    out = tmp_path / "thresholds.csv"
    run = run_cli("calibrate", "--checkpoint", setup["ckpt"], "--layout", "folder", "--data", data,
                  "--split", "all", "-o", out)
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == list(LABELS)
    assert set(rows[0]) == {"label", "threshold", "f1", "precision", "recall"}

    # Independent check: clip scores from the Tagger, F1 of sklearn at the written threshold = best over a sweep.
    splits = load_splits("folder", data)
    examples = [e for m in (splits.train, splits.valid) for e in m.examples]
    tagger = Tagger(load_model(setup["ckpt"]))
    scores = torch.stack([tagger.tag(e.source)[0].scores for e in examples]).numpy()
    targets = np.zeros_like(scores)
    for i, e in enumerate(examples):
        targets[i, list(e.targets)] = 1
    for c, row in enumerate(rows):
        chosen = float(row["threshold"])
        best = max(f1_score(targets[:, c], scores[:, c] >= t) for t in np.unique(scores[:, c]))
        assert f1_score(targets[:, c], scores[:, c] >= chosen - 5e-7) == pytest.approx(best, abs=1e-9)
        assert float(row["f1"]) == pytest.approx(best, abs=1e-5)  # written with 6 significant digits

    run = run_cli("events", setup["scene"], "--checkpoint", setup["ckpt"], "--thresholds", out)
    assert run.returncode == 0, run.stderr
    run = run_cli("tag", setup["tone"], "--checkpoint", setup["ckpt"], "--thresholds", out, "--format", "json")
    assert run.returncode == 0, run.stderr
    clip = json.loads(run.stdout)[0]
    thresholds = {r["label"]: float(r["threshold"]) for r in rows}
    assert all(item["score"] >= thresholds[item["label"]] for item in clip["labels"])
    scores = tagger.tag(setup["tone"])[0].scores
    assert {item["label"] for item in clip["labels"]} == {
        label for label, s in zip(LABELS, scores.tolist(), strict=True) if s >= thresholds[label] - 5e-7}

    run = run_cli("calibrate", "--checkpoint", setup["ckpt"], "--data", data, "--mode", "precision",
                  "--target-precision", "0.5", "-o", tmp_path / "p.csv")
    assert run.returncode == 0, run.stderr


def test_tag_only_exclude(setup, capsys):
    rc, out, err = run_main(capsys, "tag", setup["tone"], "--checkpoint", setup["ckpt"], "--exclude", "tone",
                            "--format", "json", "--top-k", "3")
    assert rc == 0, err
    labels = [item["label"] for item in json.loads(out)[0]["labels"]]
    assert sorted(labels) == ["chirp", "noise"]
    rc, _, err = run_main(capsys, "tag", setup["tone"], "--checkpoint", setup["ckpt"], "--only", "nois")
    assert rc == 1 and "unknown class name(s) 'nois'" in err


def test_explain_cli_png(setup, tmp_path, capsys):
    out = tmp_path / "explain.png"
    run = run_cli("explain", setup["scene"], "-o", out, "--checkpoint", setup["ckpt"], "--class", "tone",
                  "--start", "2.5", "--width", "800", "--height", "400")
    assert run.returncode == 0, run.stderr
    assert png_size(out.read_bytes()) == (800, 400)
    rc, _, err = run_main(capsys, "explain", setup["scene"], "-o", out, "--force", "--checkpoint", setup["ckpt"],
                          "--class", "dog")
    assert rc == 1 and "unknown class name(s) 'dog'" in err
    rc, _, err = run_main(capsys, "explain", setup["broken"], "-o", tmp_path / "x.png", "--checkpoint", setup["ckpt"])
    assert rc == 1 and str(setup["broken"]) in err and not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Memory on long files


@pytest.mark.slow
def test_hour_long_file_streams_with_bounded_memory(setup, tmp_path):
    """Peak RSS of `ast-audio events` on a 60 min file stays under 1.5 GB and within 100 MB of a 10 min file, while
    the decoded hour alone (float32 at 16 kHz) would be 230 MB; throughput is printed for the report."""
    short = write_noise_file(tmp_path / "ten.wav", 10)
    hour = write_noise_file(tmp_path / "hour.wav", 60)
    common = ("--checkpoint", setup["ckpt"], "--window", "1.28", "--hop", "1.28", "--batch-size", "16",
              "--no-progress", "-o", tmp_path / "events.json", "--force")
    rss_short, seconds_short = peak_rss("events", short, *common)
    rss_hour, seconds_hour = peak_rss("events", hour, *common)
    print(f"\npeak RSS: 10 min {rss_short:.0f} MB, 60 min {rss_hour:.0f} MB; audio seconds per wall second: "
          f"{600 / seconds_short:.0f} (10 min), {3600 / seconds_hour:.0f} (60 min)")
    assert rss_hour < 1536  # 1.5 GB
    assert rss_hour - rss_short < 100  # does not grow with the duration (the hour's samples alone are 230 MB)
    doc = json.loads((tmp_path / "events.json").read_text())
    assert doc[0]["duration_s"] == pytest.approx(3600.0)


# ---------------------------------------------------------------------------------------------------------------------
# Known truth with a real, trained AST


@pytest.mark.slow
def test_trained_tone_detector_events_within_one_hop(tmp_path):
    """`ast-audio events` with a trained AST on two minutes of noise (44.1 kHz stereo, so resampled and downmixed
    while streaming) with 1 kHz tones at known seconds: one event per tone, onset/offset within one hop."""
    from helpers import write_scene

    save_model(train_tone_detector(), tmp_path / "tone-model")
    truth = [(12.0, 15.5), (47.3, 52.0), (90.6, 99.1)]
    scene = write_scene(tmp_path / "scene.wav", 120.0, truth, 44100, channels=2, seed=5)
    hop = 0.25
    run = run_cli("events", scene, "--checkpoint", tmp_path / "tone-model", "--window", "1.0", "--hop", str(hop),
                  "--median", "3", "--format", "csv")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert len(rows) == len(truth), rows
    for row, (a, b) in zip(rows, truth, strict=True):
        assert row["label"] == "tone"
        assert abs(float(row["onset"]) - a) <= hop and abs(float(row["offset"]) - b) <= hop, (row, a, b)
