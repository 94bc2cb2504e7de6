"""Window and hop as one value (issue 23 item 4): `Windowing`, its three policies (tag and live: the input, half of it;
events: half the input, a tenth of that for clip models, hop = window for frame models), round trips between seconds
and samples, and the same windows from the Python API, the command line and the server for the same options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ast_audio import AST, FrontendConfig
from ast_audio.config import FrameHeadConfig
from ast_audio.errors import ConfigError
from ast_audio.infer.live import StreamingTagger
from ast_audio.infer.pipeline import EventPipeline
from ast_audio.infer.tagger import Tagger, score_stream
from ast_audio.infer.windowing import Windowing, event_windowing, live_windowing, tag_windowing
from ast_audio.weights.checkpoint import save_model
from conftest import run_main, tiny_config, write_tone

RATE = 16000
INPUT = 127 * 160 + 400  # samples of the tiny models' 128-frame input (1.295 s)
COLUMN, T_DIM = 1600, 12  # the frame model's grid: a column is 10 frames of 10 ms; 12 columns per input


def frame_model() -> AST:
    config = tiny_config(num_classes=3, frame_head=FrameHeadConfig(hidden=16))
    frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
    return AST(config, frontend=frontend, labels=("a", "b", "c"), multi_label=True).eval()


def clip_model() -> AST:
    config = tiny_config(num_classes=3)
    frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
    return AST(config, frontend=frontend, labels=("a", "b", "c"), multi_label=True).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("windowing")
    save_model(clip_model(), root / "clip")
    save_model(frame_model(), root / "frame")
    write_tone(root / "tone.wav", seconds=3.3)
    return {"clip": root / "clip", "frame": root / "frame", "tone": root / "tone.wav"}


# ---------------------------------------------------------------------------------------------------------------------
# The policies, written out by hand


def test_policies_defaults_by_use_and_model_kind():
    clip, frame = clip_model(), frame_model()
    assert frame.config.grid[1] == T_DIM and clip.frontend.input_samples == INPUT
    assert tag_windowing(clip) == Windowing(RATE, INPUT, INPUT // 2)
    assert live_windowing(clip) == Windowing(RATE, INPUT, INPUT // 2)
    assert event_windowing(clip) == Windowing(RATE, INPUT // 2, round(INPUT / 20))  # 10360, 1036
    assert event_windowing(frame) == Windowing(RATE, T_DIM * COLUMN, T_DIM * COLUMN, COLUMN)
    assert event_windowing(frame, hop_s=0.6) == Windowing(RATE, T_DIM * COLUMN, T_DIM * COLUMN // 2, COLUMN)
    assert live_windowing(frame) == Windowing(RATE, T_DIM * COLUMN, RATE, COLUMN)  # a 1 s hop
    assert tag_windowing(frame) == Windowing(RATE, INPUT, INPUT // 2)  # tagging reads the clip head: clip rules
    # The user's values, in samples; an event hop defaults to a tenth of the user's window.
    assert tag_windowing(clip, 1.0, 0.25) == Windowing(RATE, 16000, 4000)
    assert tag_windowing(clip, 1.0) == Windowing(RATE, 16000, 8000)
    assert event_windowing(clip, 1.0) == Windowing(RATE, 16000, 1600)
    assert live_windowing(frame, hop_s=0.2) == Windowing(RATE, T_DIM * COLUMN, 3200, COLUMN)
    w = event_windowing(frame, hop_s=0.6)
    assert w.frames and w.overlap and w.frame_s == pytest.approx(0.1) and not event_windowing(clip).frames


@pytest.mark.parametrize("policy,model,window_s,hop_s,match", [
    (tag_windowing, clip_model, 0.0, None, "window_s must be a positive"),
    (tag_windowing, clip_model, 2.0, None, "longer than the model's input"),
    (tag_windowing, clip_model, 0.01, None, "shorter than one 25 ms analysis frame"),
    (tag_windowing, clip_model, 1.0, 1.5, "hop_s must be in"),
    (event_windowing, clip_model, None, 0.0, "hop_s must be in"),
    (event_windowing, frame_model, None, 0.3, "leave out --window and give --hop 1.2 or 0.6"),
    (event_windowing, frame_model, 0.5, None, "leave out --window"),
    (live_windowing, frame_model, 1.0, None, "window_s does not apply to a frame model"),
    (live_windowing, frame_model, None, 0.05, "between one column"),
])
def test_policies_refuse_in_one_line(policy, model, window_s, hop_s, match):
    with pytest.raises(ConfigError, match=match) as info:
        policy(model(), window_s, hop_s)
    assert "\n" not in str(info.value)


CLIP_OPTIONS = [(None, None), (None, 0.6), (1.2, 0.6), (0.7, 0.3), (0.0313, 0.0021)]
ROUND_TRIPS = ([(tag_windowing, clip_model, o) for o in CLIP_OPTIONS]
               + [(event_windowing, clip_model, o) for o in CLIP_OPTIONS]
               + [(event_windowing, frame_model, o) for o in [(None, None), (None, 0.6), (1.2, 1.2), (1.295, 0.6)]]
               + [(live_windowing, frame_model, o) for o in [(None, None), (None, 0.6), (None, 0.2), (None, 1.17)]])


@pytest.mark.parametrize("policy,model,options", ROUND_TRIPS)
def test_seconds_round_trip(policy, model, options):
    """Seconds -> samples -> seconds -> samples is stable: the windowing's own seconds rebuild it exactly (the edges
    report what the model ran, and feeding that back runs the same)."""
    m = model()
    first = policy(m, *options)
    again = policy(m, None if first.frames else first.window_s, first.hop_s)
    assert again == first
    assert round(first.window_s * RATE) == first.window and round(first.hop_s * RATE) == first.hop


def test_windowing_given_once_replaces_seconds_and_checks_the_model():
    clip, frame = clip_model(), frame_model()
    tagger = Tagger(clip)
    w = tag_windowing(clip, 0.5, 0.25)
    with pytest.raises(ConfigError, match="either windowing or window_s"):
        tagger.tag([], windowing=w, window_s=0.5)
    with pytest.raises(ConfigError, match="at 8000 Hz but the model runs at 16000 Hz"):
        score_stream(tagger, "x.wav", windowing=Windowing(8000, 4000, 2000))
    with pytest.raises(ConfigError, match="other kind of model"):
        StreamingTagger(Tagger(frame), RATE, windowing=w)
    assert EventPipeline(Tagger(frame), windowing=event_windowing(frame, hop_s=0.6)).windowing.overlap


# ---------------------------------------------------------------------------------------------------------------------
# One set of options, the same windows everywhere


def starts_by_hand(num_samples: int, window: int, hop: int) -> list[float]:
    """0, hop, 2 hop, ... while start + window < N, then N - window: in seconds."""
    starts, start = [], 0
    while start + window < num_samples:
        starts.append(start / RATE)
        start += hop
    return starts + [(num_samples - window) / RATE]


def test_tag_windows_equal_in_python_cli_and_server(setup, capsys):
    expected = starts_by_hand(round(3.3 * RATE), 16000, 4000)  # --window 1 --hop 0.25 over 3.3 s
    tagger = Tagger(clip_model())
    python = [w.start_s for w in tagger.tag(setup["tone"], window_s=1.0, hop_s=0.25)[0].windows]
    rc, out, err = run_main(capsys, "tag", setup["tone"], "--checkpoint", setup["clip"], "--window", "1.0", "--hop",
                            "0.25", "--format", "json")
    assert rc == 0, err
    cli = [w["start_s"] for w in json.loads(out)[0]["windows"]]
    from ast_audio.serve.app import create_app

    with TestClient(create_app(setup["clip"]), base_url="http://localhost") as client:
        response = client.post("/v1/tag", files={"file": ("tone.wav", Path(setup["tone"]).read_bytes(), "audio/wav")},
                               data={"window_s": "1.0", "hop_s": "0.25"})
        assert response.status_code == 200, response.text
        served = [w["start_s"] for w in response.json()["windows"]]
        stream_ready = {}
        with client.websocket_connect("ws://localhost/v1/stream") as ws:
            ws.send_text(json.dumps({"rate": RATE, "window_s": 1.0, "hop_s": 0.25}))
            stream_ready = ws.receive_json()
    assert python == pytest.approx(expected) and cli == pytest.approx(expected) and served == pytest.approx(expected)
    streamer = StreamingTagger(tagger, RATE, window_s=1.0, hop_s=0.25)
    assert (stream_ready["window_s"], stream_ready["hop_s"]) == (streamer.window_s, streamer.hop_s) == (1.0, 0.25)


@pytest.mark.parametrize("kind,options", [("clip", ()), ("clip", ("--window", "1.0")), ("frame", ()),
                                          ("frame", ("--hop", "0.6"))])
def test_event_windows_equal_in_python_cli_and_server(setup, capsys, kind, options):
    model = clip_model() if kind == "clip" else frame_model()
    seconds = dict(zip(("window_s" if o == "--window" else "hop_s" for o in options[::2]),
                       map(float, options[1::2]), strict=True))
    python = EventPipeline(Tagger(model), **seconds).windowing
    assert python == event_windowing(model, **seconds)
    rc, out, err = run_main(capsys, "events", setup["tone"], "--checkpoint", setup[kind], *options)
    assert rc == 0, err
    (cli,) = json.loads(out)
    from ast_audio.serve.app import create_app

    with TestClient(create_app(setup[kind]), base_url="http://localhost") as client:
        response = client.post("/v1/events", data={k: str(v) for k, v in seconds.items()},
                               files={"file": ("tone.wav", Path(setup["tone"]).read_bytes(), "audio/wav")})
    assert response.status_code == 200, response.text
    for doc in (cli, response.json()):
        assert (doc["window_s"], doc["hop_s"]) == (round(python.window_s, 6), round(python.hop_s, 6))
