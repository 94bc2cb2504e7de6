"""Frame models live (issue 20): `StreamingTagger` streams a frame model's columns hop by hop on the file path's
gapless grid; with hop = window they are the file path's scores of the audio received so far, with other hops those of
a window ending at each hop (a brute-force reference below, apart from live.py); causal events equal `detect_events`
on the same frame scores; late hops are scored together; `listen --input -` and `/v1/stream` carry the frames."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ast_audio import AST, FrontendConfig
from ast_audio.audio.features import FeatureExtractor
from ast_audio.config import FrameHeadConfig
from ast_audio.errors import ConfigError
from ast_audio.infer.events import EventConfig, detect_events
from ast_audio.infer.frames import score_frames
from ast_audio.infer.live import StreamingTagger
from ast_audio.infer.stream import Timeline
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_main, tiny_config

LABELS = ("chirp", "noise", "tone", "dog", "bell")
RATE = 16000
COLUMN, T_DIM, INPUT = 1600, 12, 20_720  # the tiny model: 12 columns of 0.1 s per 128-frame input (1.295 s)
WINDOW_S = T_DIM * COLUMN / RATE  # 1.2 s: the columns of one input


def frame_model(seed: int = 0) -> AST:
    """A tiny frame model (BiGRU over time, so every column depends on the whole window) whose frame classifier is
    scaled by 40: the random network's frame scores spread over 0..1 instead of all ~0.5, so events come and go."""
    torch.manual_seed(seed)
    config = tiny_config(frame_head=FrameHeadConfig(temporal="bigru", hidden=16))
    model = AST(config, frontend=FrontendConfig(num_mel_bins=128, target_length=128), labels=list(LABELS)).eval()
    with torch.no_grad():
        model.frame_head.classifier.weight.mul_(40.0)
    return model


@pytest.fixture(scope="module")
def model() -> AST:
    return frame_model()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model) -> Path:
    return save_model(model, tmp_path_factory.mktemp("live-frames") / "ckpt")


def scene(samples: int, seed: int = 0) -> np.ndarray:
    """(N,) float32 at 16 kHz: noise with tone bursts of changing pitch, so columns score differently."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    bursts = (np.sin(2 * np.pi * 0.7 * t) > 0.3) * 0.4 * np.sin(2 * np.pi * (300 + 200 * np.floor(t)) * t)
    return (bursts + 0.05 * rng.standard_normal(samples)).astype(np.float32)


def feed(streamer: StreamingTagger, data: np.ndarray, seed: int, most: int = 9000) -> list:
    """Feed `data` in random block sizes; every hop, close() included."""
    rng = np.random.default_rng(seed)
    hops, i = [], 0
    while i < data.shape[0]:
        n = int(rng.integers(1, most))
        hops += streamer.feed(data[i:i + n])
        i += n
    return hops + streamer.close()


def frame_hops(hops: list) -> list:
    return [h for h in hops if h.frames is not None]


def reference(model: AST, audio: np.ndarray, hop: int) -> list[tuple[int, np.ndarray]]:
    """(first grid column, (n, C) scores) per hop, counted here: hop k ends at sample k * hop and holds the columns
    completed since hop k - 1; they are read off one window whose last column is the hop's last complete column,
    holding the samples from its start up to the hop's end (at most one input). The stream's end is one more hop
    holding the rest (the last column partial), with the window the next regular hop would have had."""
    extractor = FeatureExtractor(model.frontend)
    n = audio.shape[0]
    plans = [(k * hop, k * hop // COLUMN, k * hop // COLUMN) for k in range(1, n // hop + 1)]
    total = math.ceil(n / COLUMN)
    if total > (plans[-1][1] if plans else 0):
        plans.append((n, total, max(total, (n // hop + 1) * hop // COLUMN)))
    out, done = [], 0
    for end, upto, window_end in plans:
        first = max(0, window_end - T_DIM)
        clip = torch.from_numpy(audio[first * COLUMN: min(end, first * COLUMN + INPUT)])
        with torch.no_grad():
            probs = torch.sigmoid(model.forward_frames(extractor([clip])))[0]  # (T_DIM, C)
        out.append((done, probs[done - first: upto - first].numpy()))
        done = upto
    return out


def check_gapless(hops: list, samples: int) -> np.ndarray:
    """The hops' columns tile the grid 0 .. ceil(N / column) with no gap or overlap; returns them stacked (G, C)."""
    assert [h.first_column for h in hops] == list(np.cumsum([0] + [len(h.frames) for h in hops[:-1]]))
    spans = np.concatenate([h.frame_spans for h in hops])
    assert spans.shape[0] == math.ceil(samples / COLUMN) and spans[0, 0] == 0.0
    np.testing.assert_allclose(spans[1:, 0], spans[:-1, 1], atol=1e-12)
    assert spans[-1, 1] == pytest.approx(samples / RATE)
    return np.concatenate([h.frames for h in hops])


# ----------------------------------------------------------------------------------------------------------------
# Frame scores


@pytest.mark.parametrize("samples", [3 * T_DIM * COLUMN + 5000, 2 * T_DIM * COLUMN, 9000],
                         ids=["3 windows and a partial one", "2 whole windows", "shorter than a window"])
def test_hop_equal_to_the_window_gives_the_file_paths_scores_of_the_audio_so_far(model, samples):
    """hop = the input's 12 columns: hop k's columns are `score_frames` of the stream up to the hop's end (its last
    window), and the last hop's are `score_frames` of the whole stream's last window (the partial one)."""
    audio = scene(samples, seed=1)
    hops = frame_hops(feed(StreamingTagger(Tagger(model), RATE, hop_s=WINDOW_S), audio, seed=2))
    check_gapless(hops, samples)
    assert len(hops) == math.ceil(samples / (T_DIM * COLUMN))
    for k, h in enumerate(hops):
        so_far = score_frames(model, torch.from_numpy(audio[:min(samples, (k + 1) * T_DIM * COLUMN)]))
        np.testing.assert_allclose(h.frames, so_far.scores[k * T_DIM:].numpy(), atol=1e-5, rtol=0)
        assert h.start_s == pytest.approx(k * WINDOW_S) and h.end_s == pytest.approx(min(samples / RATE,
                                                                                          (k + 1) * WINDOW_S))
    if samples <= T_DIM * COLUMN:  # one window: the whole stream is the file path's one window
        np.testing.assert_allclose(hops[0].frames, score_frames(model, torch.from_numpy(audio)).scores.numpy(),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("hop_s", [0.3, 0.25, 0.1, 0.7], ids=["3 columns", "2.5 columns", "1 column", "7 columns"])
def test_each_hops_columns_come_from_the_window_ending_at_the_hop(model, hop_s):
    """Any hop (whole columns or not, fed in random blocks, scored in batches of 3): each hop's columns equal the
    brute-force reference, the grid is gapless, each pass is one window, and a hop holds the columns completed in
    it (a column straddling the hop's end waits for the next). 2.5 s: two windows and a partial column, so every hop
    size here has hops whose window slides past the stream's start and a last hop cut at the stream's end."""
    samples = 5 * RATE // 2 + 777
    audio = scene(samples, seed=3)
    streamer = StreamingTagger(Tagger(model), RATE, hop_s=hop_s, batch_size=3)
    hops = frame_hops(feed(streamer, audio, seed=4))
    check_gapless(hops, samples)
    expected = reference(model, audio, round(hop_s * RATE))
    assert [(h.first_column, len(h.frames)) for h in hops] == [(g, len(f)) for g, f in expected]
    for h, (_, want) in zip(hops, expected, strict=True):
        np.testing.assert_allclose(h.frames, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(h.scores, want.max(axis=0), atol=1e-5, rtol=0)  # `top` is the hop's max
        assert h.frame_spans[-1, 1] <= h.end_s + 1e-9  # nothing scored before it arrived
    assert streamer.index == len(hops) and streamer.held_samples <= INPUT + 9000


def test_a_resampled_stereo_stream_gives_the_grid_of_its_model_rate_samples(model):
    """44.1 kHz stereo: downmixed and resampled as the clip path does, the columns tile the resampled length."""
    rng = np.random.default_rng(5)
    data = (0.2 * rng.standard_normal((44100 * 3 + 50, 2))).astype(np.float32)
    streamer = StreamingTagger(Tagger(model), 44100, 2, hop_s=0.5)
    hops = frame_hops(feed(streamer, data, seed=6))
    check_gapless(hops, streamer.received)
    assert abs(streamer.received - data.shape[0] * RATE / 44100) <= 1


# ----------------------------------------------------------------------------------------------------------------
# Events


@pytest.mark.parametrize("rules", [dict(median_windows=1, min_duration_s=0.0, merge_gap_s=0.0), dict(),
                                   dict(median_windows=3), dict(hysteresis=0.98, min_duration_s=0.25),
                                   dict(median_windows=5, merge_gap_s=0.3, exclude=("noise",))],
                         ids=["plain", "frame defaults", "median 3", "hysteresis min duration",
                              "median 5 merge gap exclude"])
def test_live_frame_events_equal_detect_events_on_the_same_frame_scores(model, rules):
    """The events closed hop by hop are `detect_events` on the stitched live frame scores as a Timeline whose windows
    are the columns (each column its own cell; the stream's end closes the last one), and each is opened once.
    Each class's threshold is its median frame score on this scene, so events come and go."""
    samples = 6 * RATE + 333
    audio = scene(samples, seed=7)
    plain = np.concatenate([h.frames for h in frame_hops(StreamingTagger(Tagger(model), RATE, hop_s=0.4).run([audio]))])
    config = EventConfig(thresholds=dict(zip(LABELS, np.median(plain, axis=0).tolist(), strict=True)),
                         **{"hysteresis": 1.0, **rules})
    hops = feed(StreamingTagger(Tagger(model), RATE, hop_s=0.4, events=config), audio, seed=8)
    frames = check_gapless(frame_hops(hops), samples)
    starts = torch.arange(frames.shape[0], dtype=torch.float64) * COLUMN / RATE
    timeline = Timeline(starts_s=starts, ends_s=starts + COLUMN / RATE, scores=torch.from_numpy(frames).float(),
                        labels=LABELS, duration_s=samples / RATE, hop_s=COLUMN / RATE, window_s=COLUMN / RATE,
                        frame_s=COLUMN / RATE)  # frame scores: rules left unset take the frame defaults, as live
    # Live decides per column, on the column's own cell (no interpolation between columns): the cells rule.
    offline = detect_events(timeline, dataclasses.replace(config, grid="cells", interpolate=False))
    closed = sorted((e for h in hops for e in h.closed), key=lambda e: (e.onset_s, e.label))
    assert len(offline) >= 6  # the scene does produce events
    assert [(e.label, round(e.onset_s, 9), round(e.offset_s, 9)) for e in closed] == \
        [(e.label, round(e.onset_s, 9), round(e.offset_s, 9)) for e in offline]
    np.testing.assert_allclose([e.score for e in closed], [e.score for e in offline], atol=1e-6)
    opened = [(o.label, o.onset_s) for h in hops for o in h.opened]
    assert sorted(opened) == sorted((e.label, e.onset_s) for e in closed)


def test_live_rules_left_unset_take_the_model_kinds_defaults(model):
    """listen and /v1/stream leave median, min duration and merge gap unset (None) unless given: a frame model then
    uses the frame rule of `events` (3 columns, 0.2 s, 0.2 s), a clip model none of them; a value given is kept."""
    clip = AST(tiny_config(), frontend=FrontendConfig(num_mel_bins=128, target_length=128), labels=list(LABELS))
    for tagger, expected in [(Tagger(model), (3, 0.2, 0.2)), (Tagger(clip.eval()), (1, 0.0, 0.0))]:
        c = StreamingTagger(tagger, RATE).events.config
        assert (c.median_windows, c.min_duration_s, c.merge_gap_s, c.threshold, c.hysteresis) == (*expected, 0.5, 0.5)
    c = StreamingTagger(Tagger(model), RATE, events=EventConfig(median_windows=1, merge_gap_s=0.0)).events.config
    assert (c.median_windows, c.min_duration_s, c.merge_gap_s) == (1, 0.2, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Falling behind, bad options


def test_late_hops_are_scored_together_by_the_window_ending_at_the_newest(model):
    """drop_late with old audio: the ready hops get one pass, the window ending at the newest hop; its columns stay
    on the grid (all of them while they fit one window, else the oldest are dropped) and the merged hops are counted
    once, with one warning."""
    audio = scene(5 * RATE, seed=9)
    streamer = StreamingTagger(Tagger(model), RATE, hop_s=0.3, drop_late=True)
    old = -1000.0  # arrived long ago: every hop is late
    first = streamer.feed(audio[:int(0.9 * RATE)], arrived=old)  # 3 hops, 9 columns: one pass keeps them all
    assert [(h.first_column, len(h.frames), h.skipped) for h in first] == [(0, 9, 2)]
    assert first[0].warning and "one pass" in first[0].warning
    ref = reference(model, audio[:int(0.9 * RATE)], int(0.9 * RATE))[0][1]  # the window ending at 0.9 s
    np.testing.assert_allclose(first[0].frames, ref, atol=1e-5, rtol=0)
    later = streamer.feed(audio[int(0.9 * RATE):int(3.9 * RATE)], arrived=old)  # 10 hops, 30 columns: 12 fit
    assert [(h.first_column, len(h.frames), h.skipped) for h in later] == [(27, 12, 11)]
    assert later[0].warning is None and streamer.index == 13


def test_bad_frame_options_are_one_line(model, ckpt, capsys):
    tagger = Tagger(model)
    for kwargs, match in [(dict(window_s=1.0), "window_s does not apply to a frame model"),
                          (dict(hop_s=0.05), "between one column"), (dict(hop_s=1.5), "between one column")]:
        with pytest.raises(ConfigError, match=match) as info:
            StreamingTagger(tagger, RATE, **kwargs)
        assert "\n" not in str(info.value)
    rc, out, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--precision", "fp32", "--input", "-",
                            "--window", "1")
    assert rc != 0 and "window_s does not apply to a frame model" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------------
# listen and /v1/stream


def test_listen_stdin_jsonl_carries_the_frames_of_the_library(ckpt):
    """`listen --input -` with a frame checkpoint: one JSON object per hop, the library's, with "frames" holding the
    hop's columns on the grid and the scores of its top classes per column."""
    audio = scene(3 * RATE + 400, seed=10)
    pcm = (audio * 32767).astype("<i2")
    run = subprocess.run([sys.executable, "-m", "ast_audio", "listen", "--checkpoint", str(ckpt), "--precision",
                          "fp32", "--input", "-", "--hop", "0.5", "--allow-skip", "--top-k", "2", "--format", "jsonl",
                          "--threshold", "0.6"], input=pcm.tobytes(), capture_output=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr.decode()
    got = [json.loads(line) for line in run.stdout.decode().splitlines()]
    streamer = StreamingTagger(Tagger(load_model(ckpt)), RATE, hop_s=0.5, events=EventConfig(threshold=0.6))
    expected = [h.to_dict(2) for h in streamer.run([pcm.astype(np.float32) / 32768])]
    assert len(got) == len(expected) == 7  # 6 hops of 0.5 s and the partial one
    columns = 0
    for g, e in zip(got, expected, strict=True):
        f = g["frames"]
        assert f["first"] == columns and f["column_s"] == 0.1 and f["classes"] == [t["label"] for t in g["top"]]
        assert np.asarray(f["scores"]).shape == (len(e["frames"]["scores"]), 2)
        assert f["classes"] == e["frames"]["classes"]
        np.testing.assert_allclose(f["scores"], e["frames"]["scores"], atol=2e-6)
        assert (g["opened"], g["closed"]) == (e["opened"], e["closed"])
        columns += len(f["scores"])
    assert columns == math.ceil((3 * RATE + 400) / COLUMN) and got[-1]["frames"]["end_s"] == 3.025
    assert any(g["closed"] for g in got)


def test_latency_bench_waits_under_one_hop_for_a_sounds_frame_scores(ckpt, tmp_path):
    """bench/live_latency.py --frame-head runs the real StreamingTagger; the wait from a sound's last sample to the hop
    holding its column (computed from sample positions, not timed) is under one hop: a column is final when its hop
    arrives, with no look-ahead to wait for."""
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "bench" / "live_latency.py"), "--frame-head", "--checkpoint",
                          str(ckpt), "--precisions", "fp32", "--hops", "0.3,0.5", "--onsets", "8", "--json",
                          str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["hop_s"] for r in rows] == [0.3, 0.5] and all(r["frames"] and r["onsets"] == 8 for r in rows)
    for r in rows:
        assert 0 <= r["wait_p50"] <= r["wait_p95"] < r["hop_s"]
    assert "| fp32 | 0.3 |" in run.stdout


def test_terminal_view_draws_each_top_class_per_column(model):
    from ast_audio.infer.live_view import SPARK, LiveView

    (hop,) = frame_hops(StreamingTagger(Tagger(model), RATE, hop_s=0.5).feed(scene(RATE // 2, seed=11)))
    out = io.StringIO()
    LiveView(top_k=2, keep=list(range(5)), tty=True, out=out).show(hop)
    label = hop.top(1)[0][0]
    line = next(line for line in out.getvalue().splitlines() if line.strip().startswith(label))
    expected = "".join(SPARK[round(float(v) * 8)] for v in hop.frames[:, LABELS.index(label)])
    assert line.endswith("  " + expected) and len(expected) == 5


@pytest.fixture(scope="module")
def server(ckpt):
    from serve_helpers import run_server

    with run_server(ckpt, "--min-hop-fraction", "0.5") as srv:
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/stream"  # type: ignore[attr-defined]
        yield srv


def test_stream_sends_frames_equal_to_the_library(server, ckpt):
    """22.05 kHz stereo over /v1/stream to a real `ast-audio serve` with a frame model: "ready" says frames and the
    column, every hop carries its frames; the hops scored on their own equal the library's (all of them, and the
    events, when the server did not fall behind), and the columns tile the grid."""
    from helpers import pcm, stream

    data = pcm(3.0, seed=12)
    start = {"rate": 22050, "format": "s16le", "channels": 2, "hop_s": 0.6, "threshold": 0.6, "median": 3,
             "top_k": 3}
    got = stream(server.ws, data, start=start)
    ready, hops, done = got[0], got[1:-1], got[-1]
    assert ready["ready"] and ready["frames"] is True and ready["column_s"] == 0.1
    assert ready["window_s"] == WINDOW_S and ready["hop_s"] == 0.6
    streamer = StreamingTagger(Tagger(load_model(ckpt)), 22050, 2, hop_s=0.6,
                               events=EventConfig(threshold=0.6, median_windows=3))
    expected = {h.index: h.to_dict(3) for h in streamer.run([data.astype(np.float32) / 32768])}
    assert done["done"] and done["windows"] == len(expected)
    columns = compared = 0
    for h in hops:
        f = h["frames"]
        assert f["first"] >= columns  # on the grid, in order (a server far behind may drop the oldest)
        columns = f["first"] + len(f["scores"])
        e = expected[h["index"]]
        if f["first"] == e["frames"]["first"] and len(f["scores"]) == len(e["frames"]["scores"]):
            assert f["classes"] == e["frames"]["classes"]
            np.testing.assert_allclose(f["scores"], e["frames"]["scores"], atol=1e-5)
            compared += 1
    assert compared >= 1 and columns == math.ceil(streamer.received / COLUMN)
    if done["skipped"] == 0:
        assert [h["frames"]["first"] for h in hops] == [e["frames"]["first"] for e in expected.values()]
        assert [(h["opened"], h["closed"]) for h in hops] == [(e["opened"], e["closed"]) for e in expected.values()]


def test_stream_refuses_a_window_and_a_hop_below_the_limit_in_one_line(server):
    from helpers import refused

    for first, expected in [({"rate": 16000, "window_s": 1.0}, "window_s does not apply to a frame model"),
                            ({"rate": 16000, "hop_s": 0.3}, "below the 0.6 s allowed for this frame model"),
                            ({"rate": 16000, "hop_s": 0.01}, "between one column")]:
        message, code = refused(server.ws, json.dumps(first))
        assert expected in message["error"] and "\n" not in message["error"] and code == 1008, message


@pytest.mark.slow
def test_page_live_view_draws_a_frame_model_per_column(tmp_path, ckpt):
    """The page's live mode in headless chromium against a frame model (chromium's fake microphone plays a tone):
    hops arrive, the tags and the timeline are drawn, one timeline point per frame column, no console error."""
    from playwright.sync_api import sync_playwright

    from helpers import CHROMIUM, WAIT_MS, known_sound
    from serve_helpers import run_server

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install chromium` (setup.sh does this)")
    known_sound(tmp_path / "mic.wav")
    with run_server(ckpt) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}"])
        try:
            page = browser.new_context(permissions=["microphone"]).new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.url + "/")
            page.click("details summary")
            page.fill("#hop_s", "0.5")
            page.click("#live-toggle")
            page.wait_for_selector("#live[data-state=listening]", timeout=WAIT_MS)
            page.wait_for_function("() => Number(document.getElementById('live').dataset.hops || 0) >= 4",
                                   timeout=WAIT_MS)
            hops, points = page.evaluate("() => [live.hops, live.history.length]")
            assert points >= 5 * (hops - 1)  # 5 columns of 0.1 s per 0.5 s hop (the newest may still be coming)
            assert page.locator("#live-tags li .label").count() >= 1
            assert page.get_attribute("#live-timeline", "data-drawn") == "true"
            page.click("#live-toggle")
            page.wait_for_selector("#live[data-state=idle]", timeout=WAIT_MS)
            assert problems == []
        finally:
            browser.close()
    assert "Traceback" not in server.output(), server.output()
