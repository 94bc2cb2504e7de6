"""One events pipeline (issue 20, parts 3 and 4): `EventConfig()` and the default windows are what `ast-audio events`
does with no option and what /v1/events does with no field; the file is decoded once; `--rollup` reaches the
archive path; frame models run one pass per window and their frame scores go through the same detector."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from ast_audio import AST, FrontendConfig
from ast_audio.audio.io import load_audio
from ast_audio.config import FrameHeadConfig
from ast_audio.infer.events import Energy, EventConfig, detect_events, score_grid
from ast_audio.infer.frames import score_frames
from ast_audio.infer.pipeline import EventPipeline
from ast_audio.infer.stream import Timeline
from ast_audio.infer.tagger import Tagger, score_stream
from ast_audio.infer.windowing import event_windowing
from ast_audio.weights.checkpoint import load_model, save_model
from helpers import brute_force_timeline

from .conftest import run_main, tiny_config

LABELS = ("Dog", "Cat", "Speech")  # AudioSet names, so --rollup has parents to add
RATE = 16000
TOL = 1e-5  # JSON rounds seconds and scores to 6 decimals


def write_scene(path, seconds: float = 6.0) -> None:
    """Noise with a loud 1 kHz tone over [2, 3.5) s and a quieter noise burst over [4, 4.6) s, 16 kHz mono."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.02 * rng.standard_normal(t.shape)
    tone = (t >= 2.0) & (t < 3.5)
    audio[tone] += 0.5 * np.sin(2 * np.pi * 1000 * t[tone])
    burst = (t >= 4.0) & (t < 4.6)
    audio[burst] += 0.3 * rng.standard_normal(int(burst.sum()))
    sf.write(str(path), audio.astype(np.float32), RATE)


def centred(model: AST, probabilities: torch.Tensor, bias: torch.Tensor) -> None:
    """Shift a head's bias so that each class's median logit on the scene is 0: the untrained model's scores then
    cross the default 0.5 threshold, so the defaults give events to compare."""
    p = probabilities.double().clamp(1e-6, 1 - 1e-6)
    with torch.no_grad():
        bias -= torch.log(p / (1 - p)).median(dim=0).values.float()


def spread(probabilities: torch.Tensor, head: torch.nn.Linear, std: float = 4.0) -> None:
    """Scale a centred head so that each class's logits on the scene have standard deviation `std`: the random
    model's frame scores then swing across both thresholds (not all ~0.5), so short events come and go and the
    frame rule (median, minimum duration, merge gap) changes the events."""
    p = probabilities.double().clamp(1e-6, 1 - 1e-6)
    scale = (std / torch.log(p / (1 - p)).std(dim=0)).float()  # (C,)
    with torch.no_grad():
        head.weight.mul_(scale[:, None])
        head.bias.mul_(scale)


def labelled(config, seed: int) -> AST:
    torch.manual_seed(seed)
    frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
    return AST(config, frontend=frontend, labels=LABELS, multi_label=True).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    scene = root / "scene.wav"
    write_scene(scene)
    clip = labelled(tiny_config(num_classes=3), seed=3)
    timeline = score_stream(Tagger(clip), scene, window_s=0.5, hop_s=0.25)  # 23 windows give the median logit
    centred(clip, timeline.scores, clip.mlp_head[1].bias)
    frame = labelled(tiny_config(num_classes=3, frame_head=FrameHeadConfig(hidden=16)), seed=4)
    centred(frame, score_frames(frame, scene).scores, frame.frame_head.classifier.bias)
    spread(score_frames(frame, scene).scores, frame.frame_head.classifier)
    save_model(clip, root / "clip")
    save_model(frame, root / "frame")
    return {"root": root, "scene": scene, "clip": root / "clip", "frame": root / "frame"}


def as_tuples(events) -> list[tuple]:
    """Events (objects or JSON dicts) -> (label, onset, offset, score), rounded as the JSON rounds them."""
    rows = [(e["label"], e["onset_s"], e["offset_s"], e["score"]) if isinstance(e, dict)
            else (e.label, e.onset_s, e.offset_s, e.score) for e in events]
    return [(label, round(a, 6), round(b, 6), round(s, 6)) for label, a, b, s in rows]


def assert_same_events(got, expected) -> None:
    got, expected = as_tuples(got), as_tuples(expected)
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=TOL, rtol=0)


def cli_document(capsys, *args) -> dict:
    rc, out, err = run_main(capsys, "events", *args)
    assert rc == 0, err
    (doc,) = json.loads(out)
    return doc


def server_events(checkpoint, path, **fields) -> dict:
    with TestClient(create_app_for(checkpoint), base_url="http://localhost") as client:
        response = client.post("/v1/events", files={"file": (path.name, path.read_bytes(), "audio/wav")},
                               data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    return response.json()


def create_app_for(checkpoint):
    from ast_audio.serve.app import create_app

    return create_app(checkpoint)


# ----------------------------------------------------------------------------------------------------------------
# One rule: library defaults = the command with no option = the server with no field


def test_clip_defaults_equal_cli_and_server(setup, capsys):
    """A clip model: half the input every tenth of that, overlap-add mean grid, interpolated and energy-refined
    boundaries. The expectation is built from independent window scores (every window of the decoded file run
    through the model on its own, `brute_force_timeline`), EventConfig() and Energy.from_file, with the default
    window written out here: half of the 128-frame input (1.295 s), a tenth of that as hop."""
    tagger = Tagger(load_model(setup["clip"]))
    window = 0.5 * (127 * 0.01 + 0.025)
    timeline = brute_force_timeline(tagger.model, load_audio(setup["scene"]), window, window / 10)
    clip_rule = EventConfig(threshold=0.5, hysteresis=0.5, median_windows=1, min_duration_s=0.0, merge_gap_s=0.0,
                            grid="mean", interpolate=True, refine="auto")  # written out: no median, gap or minimum
    expected = detect_events(timeline, clip_rule, Energy.from_file(setup["scene"], RATE))
    assert expected, "the centred model should give events with the defaults"
    assert EventConfig().for_kind(frames=False) == clip_rule
    assert_same_events(detect_events(timeline, EventConfig(), Energy.from_file(setup["scene"], RATE)), expected)

    assert_same_events(EventPipeline(tagger).run(setup["scene"]).events, expected)
    doc = cli_document(capsys, setup["scene"], "--checkpoint", setup["clip"])
    assert doc["window_s"] == pytest.approx(window, abs=TOL) and doc["hop_s"] == pytest.approx(window / 10, abs=TOL)
    assert "frame_s" not in doc
    assert_same_events(doc["events"], expected)
    served = server_events(setup["clip"], setup["scene"])
    assert_same_events(served["events"], expected)
    assert served["window_s"] == doc["window_s"] and served["hop_s"] == doc["hop_s"]
    np.testing.assert_allclose(served["timeline"]["starts_s"], timeline.starts_s.numpy(), atol=TOL, rtol=0)


def test_frame_defaults_equal_cli_and_server_and_detect_events_on_hand_built_scores(setup, capsys):
    """A frame model: one pass per window of its input (hop = window), the frame scores on the gapless column grid,
    no energy refinement. The expectation: `detect_events` on a Timeline built here from `score_frames`' columns."""
    model = load_model(setup["frame"])
    frames = score_frames(model, setup["scene"])
    columns = math.ceil(6.0 * RATE / 1600)  # 0.1 s columns (tstride 10 x 10 ms) over 6 s: 60
    assert frames.scores.shape == (columns, 3) and frames.windows == math.ceil(columns / 12)  # 12 columns a pass
    spans = torch.tensor(frames.spans, dtype=torch.float64)
    by_hand = Timeline(starts_s=spans[:, 0], ends_s=spans[:, 1], scores=frames.scores, labels=LABELS,
                       duration_s=6.0, hop_s=1.2, window_s=1.2)
    grid = score_grid(by_hand)  # gapless columns: the overlap-add grid is the columns themselves
    np.testing.assert_allclose(grid.bounds_s, np.arange(columns + 1) * 0.1, atol=1e-9)
    np.testing.assert_allclose(grid.scores, frames.scores.double().numpy(), atol=0)
    # The frame model's rule, written out (docs/events.md): median over 3 columns, events under 0.2 s dropped and
    # those 0.2 s apart merged, no energy refinement; threshold and hysteresis as for clip models.
    frame_rule = EventConfig(threshold=0.5, hysteresis=0.5, median_windows=3, min_duration_s=0.2, merge_gap_s=0.2,
                             grid="mean", interpolate=True, refine="none")
    expected = detect_events(by_hand, frame_rule)
    assert expected, "the centred frame model should give events with the defaults"
    assert expected != detect_events(by_hand, dataclasses.replace(frame_rule, median_windows=1, min_duration_s=0,
                                                                  merge_gap_s=0)), "the frame rule must matter here"
    assert EventConfig().for_kind(frames=True) == dataclasses.replace(frame_rule, refine="auto")

    pipeline = EventPipeline(Tagger(model))
    result = pipeline.run(setup["scene"])
    assert result.passes == frames.windows and not pipeline.uses_energy
    assert_same_events(result.events, expected)
    doc = cli_document(capsys, setup["scene"], "--checkpoint", setup["frame"])
    assert (doc["window_s"], doc["hop_s"], doc["frame_s"]) == pytest.approx((1.2, 1.2, 0.1))
    assert_same_events(doc["events"], expected)
    served = server_events(setup["frame"], setup["scene"])
    assert_same_events(served["events"], expected)
    # An option given is kept for a frame model too: --median 1 --min-duration 0 --merge-gap 0 = the bare rule.
    bare = dataclasses.replace(frame_rule, median_windows=1, min_duration_s=0.0, merge_gap_s=0.0)
    doc = cli_document(capsys, setup["scene"], "--checkpoint", setup["frame"], "--median", "1", "--min-duration",
                       "0", "--merge-gap", "0")
    assert_same_events(doc["events"], detect_events(by_hand, bare))
    served = server_events(setup["frame"], setup["scene"], median=1, min_duration=0, merge_gap=0)
    assert_same_events(served["events"], detect_events(by_hand, bare))
    view = served["timeline"]  # the page draws the frame scores: one point per column
    np.testing.assert_allclose(view["starts_s"], np.arange(columns) * 0.1, atol=TOL, rtol=0)
    top = view["classes"][0]
    np.testing.assert_allclose(top["scores"], frames.scores[:, LABELS.index(top["label"])].numpy(), atol=TOL)


def test_frame_model_energy_refinement_and_half_hop_are_options(setup, capsys):
    model = load_model(setup["frame"])
    waveform = torch.from_numpy(sf.read(str(setup["scene"]), dtype="float32")[0])
    frames = score_frames(model, waveform, overlap=True)
    spans = torch.tensor(frames.spans, dtype=torch.float64)
    by_hand = Timeline(starts_s=spans[:, 0], ends_s=spans[:, 1], scores=frames.scores, labels=LABELS,
                       duration_s=6.0, hop_s=0.6, window_s=1.2, frame_s=0.1)  # the frame rule but refine
    expected = detect_events(by_hand, EventConfig(refine="energy"), Energy.from_chunks([waveform.numpy()], RATE))
    doc = cli_document(capsys, setup["scene"], "--checkpoint", setup["frame"], "--hop", "0.6", "--refine", "energy")
    assert doc["hop_s"] == pytest.approx(0.6)
    assert_same_events(doc["events"], expected)

    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["frame"], "--hop", "0.3")
    assert rc != 0 and "frame model" in err and "--hop 1.2 or 0.6" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["frame"], "--window", "0.5")
    assert rc != 0 and "leave out --window" in err


def test_event_windows_by_model_kind(setup):
    clip, frame = Tagger(load_model(setup["clip"])), Tagger(load_model(setup["frame"]))
    w = event_windowing(clip.model)
    assert (w.window_s, w.hop_s, w.frames) == pytest.approx((0.6475, 0.06475, False))
    assert event_windowing(clip.model, 1.0, 0.5).hop_s == 0.5
    w = event_windowing(frame.model)
    assert (w.window_s, w.hop_s, w.frames, w.overlap, w.frame_s) == pytest.approx((1.2, 1.2, True, False, 0.1))
    assert event_windowing(frame.model, hop_s=0.6).overlap
    assert event_windowing(frame.model, window_s=1.295).hop_s == 1.2


# ----------------------------------------------------------------------------------------------------------------
# Decoded once


def count_decodes(monkeypatch) -> list[str]:
    """Wrap every decoder of ast_audio.audio.io wherever a module of ours imported it; returns the call log."""
    from ast_audio.audio import io

    calls: list[str] = []
    for name in ("load_audio", "stream_audio", "decode_bytes", "read_window"):
        original = getattr(io, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("ast_audio") and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("kind,options", [("clip", ()), ("frame", ("--refine", "energy"))])
def test_each_file_is_decoded_once(setup, capsys, monkeypatch, kind, options):
    """With the energy refinement on (a clip model's default, a frame model's option) the file is decoded once:
    the energy comes from the same samples as the scores."""
    calls = count_decodes(monkeypatch)
    doc = cli_document(capsys, setup["scene"], "--checkpoint", setup[kind], *options)
    assert doc["events"] and len(calls) == 1, calls


# ----------------------------------------------------------------------------------------------------------------
# --rollup on the archive path


def test_rollup_with_files_from(setup, capsys, tmp_path):
    """`events --files-from LIST -o OUT.jsonl --rollup` reports the parents: at threshold 0 every class, the
    parents included, is one event over the whole file. The parents of Dog, Cat and Speech in the AudioSet
    ontology: Domestic animals, pets and Animal; Human voice and Human sounds."""
    listing = tmp_path / "files.txt"
    listing.write_text(f"{setup['scene']}\n")
    out = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, "events", "--files-from", listing, "-o", out, "--rollup", "--threshold", "0",
                          "--checkpoint", setup["clip"], "--num-workers", "0")
    assert rc == 0, err
    (line,) = out.read_text().splitlines()
    doc = json.loads(line)
    assert {e["label"] for e in doc["events"]} == {"Dog", "Cat", "Speech", "Domestic animals, pets", "Animal",
                                                   "Human voice", "Human sounds"}
    direct = cli_document(capsys, setup["scene"], "--rollup", "--threshold", "0", "--checkpoint", setup["clip"])
    assert doc["events"] == direct["events"]


# ----------------------------------------------------------------------------------------------------------------
# Frame models through the commands around events


def test_frame_model_scores_dir_eval_events_calibrate_and_archive(setup, capsys, tmp_path):
    """--scores-dir holds one row per 0.1 s frame column (gapless, 0 to the end); eval-events reads them for PSDS;
    calibrate --truth and the archive path run the frame model through the same pipeline."""
    scores, pred, durations = tmp_path / "scores", tmp_path / "pred.tsv", tmp_path / "durations.tsv"
    rc, _, err = run_main(capsys, "events", setup["scene"], "--checkpoint", setup["frame"], "--scores-dir", scores,
                          "--format", "dcase", "-o", pred, "--durations", durations)
    assert rc == 0, err
    rows = [line.split("\t") for line in (scores / "scene.tsv").read_text().splitlines()]
    assert rows[0] == ["onset", "offset", *LABELS] and len(rows) == 1 + 60
    np.testing.assert_allclose([[float(r[0]), float(r[1])] for r in rows[1:]],
                               [[j / 10, (j + 1) / 10] for j in range(60)], atol=1e-6)

    truth = tmp_path / "truth.tsv"
    truth.write_text("filename\tonset\toffset\tevent_label\nscene.wav\t2.0\t3.5\tDog\n"
                     "scene.wav\t4.0\t4.6\tCat\nscene.wav\t0.5\t1.5\tSpeech\n")  # PSDS needs every class
    rc, out, err = run_main(capsys, "eval-events", "--truth", truth, "--scores-dir", scores, "--pred", pred,
                            "--durations", durations)
    assert rc == 0, err
    assert "PSDS1" in out.upper()

    rc, _, err = run_main(capsys, "calibrate", "--checkpoint", setup["frame"], "--truth", truth, "--audio-dir",
                          setup["root"], "-o", tmp_path / "thresholds.csv")
    assert rc == 0, err
    assert (tmp_path / "thresholds.csv").read_text().splitlines()[0].startswith("label,threshold")

    listing = tmp_path / "files.txt"
    listing.write_text(f"{setup['scene']}\n")
    rc, _, err = run_main(capsys, "events", "--files-from", listing, "-o", tmp_path / "out.jsonl", "--checkpoint",
                          setup["frame"], "--num-workers", "0")
    assert rc == 0, err
    archived = json.loads((tmp_path / "out.jsonl").read_text())
    direct = cli_document(capsys, setup["scene"], "--checkpoint", setup["frame"])
    assert archived == direct and archived["frame_s"] == pytest.approx(0.1)


def test_score_files_skips_what_cannot_be_decoded(tmp_path):
    """EventPipeline.score_files (calibrate --truth): each readable recording's timeline by key, the unreadable one
    reported to on_error and left out, progress from 0 to the count; without on_error the error is raised."""
    from ast_audio.errors import AstAudioError

    from .conftest import tiny_model, write_tone

    pipeline = EventPipeline(Tagger(tiny_model(num_classes=3)), EventConfig())
    good = write_tone(tmp_path / "a.wav", seconds=2.0)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    errors, ticks = [], []
    timelines, energies = pipeline.score_files({"a": good, "b": tmp_path / "b.wav"},
                                               on_error=lambda path, exc: errors.append(path),
                                               progress=lambda done, total: ticks.append((done, total)))
    assert list(timelines) == ["a"] and set(energies) <= {"a"}
    assert timelines["a"].duration_s == pytest.approx(2.0)
    assert errors == [str(tmp_path / "b.wav")] and ticks == [(0, 2), (1, 2), (2, 2)]
    with pytest.raises(AstAudioError):
        pipeline.score_files({"b": tmp_path / "b.wav"})


def test_help_says_which_defaults_apply_to_which_kind(capsys):
    """`events --help` and `listen --help` state both rules (the values tests above check in use)."""
    for command in ("events", "listen"):
        rc, out, _ = run_main(capsys, command, "--help")
        text = " ".join(out.split())  # argparse wraps lines
        assert rc == 0
        assert ("a clip model threshold 0.5, hysteresis 0.5, median 1, min duration 0 s, merge gap 0 s" in text and
                "a frame model threshold 0.5, hysteresis 0.5, median 3, min duration 0.2 s, merge gap 0.2 s" in text)
        assert "default: 1 for a clip model, 3 frame columns for a frame model" in text or command == "listen"
