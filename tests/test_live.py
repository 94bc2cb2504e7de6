"""Live tagging (ast_audio.infer.live): streamed window scores equal `events`' windows, causal events equal
`detect_events`, tones at known seconds come back within a hop, falling behind skips and counts windows."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.errors import AudioInputError, ConfigError
from ast_audio.infer.events import EventConfig, detect_events
from ast_audio.infer.live import CausalEvents, PcmDecoder, StreamingTagger
from ast_audio.infer.tagger import Tagger, score_stream
from conftest import tiny_model
from helpers import make_timeline


def feed_random_blocks(streamer: StreamingTagger, data: np.ndarray, seed: int, most: int = 20000) -> list:
    """Feed `data` in random block sizes (1 .. most frames); return every hop, close() included."""
    rng = np.random.default_rng(seed)
    hops, i, held = [], 0, 0
    while i < data.shape[0]:
        n = int(rng.integers(1, most))
        hops += streamer.feed(data[i:i + n])
        held = max(held, streamer.held_samples)
        i += n
    streamer.held_max = held  # type: ignore[attr-defined]
    return hops + streamer.close()


# ---------------------------------------------------------------------------------------------------------------------
# Window scores


@pytest.mark.parametrize("window_s,hop_s", [(1.0, 0.25), (0.5, 0.5), (0.7, 0.3)])
def test_stream_scores_equal_events_windows(tmp_path, window_s, hop_s):
    """44.1 kHz stereo fed in random blocks: every window equals the window `events` (score_stream on the same audio
    written to a file) scores at the same start, to 1e-5; only the samples of one window plus one block are held.

    Both paths downmix then run soxr's streaming resampler (HQ) on differently sized chunks; its output does not
    depend on the chunking beyond float32 rounding, and the scores differ only by batch composition (~1e-7)."""
    rng = np.random.default_rng(3)
    data = (0.2 * rng.standard_normal((44100 * 6 + 77, 2))).astype(np.float32)
    data[:, 1] *= 0.5  # channels differ, so the downmix matters
    sf.write(str(tmp_path / "a.wav"), data, 44100, subtype="FLOAT")
    tagger = Tagger(tiny_model())
    timeline = score_stream(tagger, tmp_path / "a.wav", window_s=window_s, hop_s=hop_s)
    streamer = StreamingTagger(tagger, 44100, 2, window_s=window_s, hop_s=hop_s)
    hops = [h for h in feed_random_blocks(streamer, data, seed=int(window_s * 10)) if h.scores is not None]
    offline = {round(float(s) * 16000): k for k, s in enumerate(timeline.starts_s)}
    # Every regular window of the file is scored live; offline adds only the end-aligned last window.
    assert [round(h.start_s * 16000) for h in hops] == sorted(offline)[:len(hops)]
    assert len(hops) >= len(offline) - 1
    for h in hops:
        k = offline[round(h.start_s * 16000)]
        np.testing.assert_allclose(h.scores, timeline.scores[k].numpy(), atol=1e-5, rtol=0)
        assert h.end_s == pytest.approx(float(timeline.ends_s[k]), abs=1e-9)
    window = streamer.window
    assert streamer.held_max <= window + round(20000 * 16000 / 44100) + 16  # one window plus one (resampled) block
    assert [h.index for h in hops] == list(range(len(hops))) and all(h.skipped == 0 for h in hops)


def test_int16_blocks_mono_and_bad_blocks():
    """int16 blocks are scaled by 1/32768 (equal to the float stream); wrong shapes and dtypes raise one-line
    AudioInputErrors; a closed stream refuses more."""
    tagger = Tagger(tiny_model())
    ints = (np.random.default_rng(0).standard_normal(16000 * 2) * 3000).astype(np.int16)
    a = StreamingTagger(tagger, 16000, window_s=0.5, hop_s=0.25)
    b = StreamingTagger(tagger, 16000, window_s=0.5, hop_s=0.25)
    hops_a = [h for h in a.run([ints[:5000], ints[5000:]]) if h.scores is not None]
    hops_b = [h for h in b.run([ints.astype(np.float32) / 32768]) if h.scores is not None]
    assert len(hops_a) == len(hops_b) == 7
    for x, y in zip(hops_a, hops_b, strict=True):
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-6, rtol=0)
    c = StreamingTagger(tagger, 16000, channels=2)
    with pytest.raises(AudioInputError, match=r"shape \(n, 2\)"):
        c.feed(np.zeros((100, 3), np.float32))
    with pytest.raises(AudioInputError, match="dtype"):
        c.feed(np.zeros((100, 2), np.int32))
    with pytest.raises(AudioInputError, match="NaN"):
        c.feed(np.full((100, 2), np.nan, np.float32))
    with pytest.raises(ConfigError):
        StreamingTagger(tagger, 0)
    with pytest.raises(ConfigError, match="hop_s"):
        StreamingTagger(tagger, 16000, window_s=0.5, hop_s=0.6)
    with pytest.raises(ConfigError, match="closed"):
        a.feed(ints[:10])


def test_pcm_decoder_splits_frames_anywhere():
    """Bytes cut at arbitrary points (inside a sample, inside a frame) decode to the same samples."""
    rng = np.random.default_rng(1)
    for dtype, np_dtype, scale in (("s16le", "<i2", 1 / 32768), ("f32le", "<f4", 1.0)):
        frames = (rng.standard_normal((1000, 2)) * (3000 if dtype == "s16le" else 0.3)).astype(np_dtype)
        raw = frames.tobytes()
        decoder = PcmDecoder(dtype, 2)
        cuts = np.sort(rng.integers(0, len(raw), 30))
        parts = [decoder.decode(raw[a:b]) for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(raw)], strict=True)]
        np.testing.assert_allclose(np.concatenate(parts), frames.astype(np.float32) * scale, atol=0)
    with pytest.raises(ConfigError, match="s16le"):
        PcmDecoder("u8", 1)


# ---------------------------------------------------------------------------------------------------------------------
# Causal events = detect_events


CONFIGS = [EventConfig(threshold=0.6, hysteresis=0.7),
           EventConfig(threshold=0.6, hysteresis=0.7, median_windows=3),
           EventConfig(threshold=0.55, hysteresis=0.8, median_windows=5, min_duration_s=1.5, merge_gap_s=1.0),
           EventConfig(threshold=0.9, thresholds={"c0": 0.5, "c2": 0.7}, merge_gap_s=0.5, exclude=("c1",)),
           EventConfig(threshold=0.5, hysteresis=1.0, min_duration_s=2.0, only=("c1", "c2"))]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(3))
def test_causal_events_equal_detect_events(config, seed):
    """Random score walks pushed one window at a time: the closed events are exactly `detect_events`' on the whole
    timeline; every event is opened once, before or when it closes, and only once its onset has happened."""
    rng = np.random.default_rng(seed)
    scores = np.clip(np.cumsum(rng.normal(0, 0.15, size=(80, 3)), axis=0) * 0.3 + 0.45, 0, 1).astype(np.float32)
    timeline = make_timeline(scores, window_s=2.0, hop_s=0.5)
    expected = detect_events(timeline, dataclasses.replace(config, grid="cells", interpolate=False))  # the live rule
    live = CausalEvents(timeline.labels, config, hop_s=0.5)
    opened, closed, when_opened = [], [], {}
    for i, centre in enumerate(timeline.centres_s.tolist()):
        o, c, _, _ = live.push(centre, scores[i])
        for e in o:
            assert e.onset_s <= centre  # an onset is reported when decided, never ahead of the stream
            when_opened[(e.label, e.onset_s)] = centre
        opened += o
        closed += c
    o, c = live.finish(timeline.duration_s)
    opened += o
    closed += c
    closed.sort(key=lambda e: (e.onset_s, e.label))
    assert [(e.label, e.onset_s, e.offset_s, e.score) for e in closed] == [
        (e.label, e.onset_s, e.offset_s, pytest.approx(e.score, abs=1e-7)) for e in expected]
    assert sorted((e.label, e.onset_s) for e in opened) == sorted((e.label, e.onset_s) for e in expected)
    assert expected or config.min_duration_s > 0  # the walks do cross the thresholds


def test_median_decided_half_kernel_later():
    """With a median over 5 windows, the smoothed state of window i arrives with window i + 2."""
    live = CausalEvents(("a",), EventConfig(median_windows=5), hop_s=1.0)
    got = [live.push(float(i), np.array([i / 10]))[2:] for i in range(6)]
    assert [g[1] for g in got] == [None, None, 0.0, 1.0, 2.0, 3.0]
    assert got[2][0][0] == pytest.approx(0.0)  # window 0: median of (0, 0, 0, 0.1, 0.2) (edge padded)
    assert got[4][0][0] == pytest.approx(0.2)  # window 2: median of 0 .. 0.4


# ---------------------------------------------------------------------------------------------------------------------
# Falling behind


def test_late_windows_are_skipped_and_counted():
    """A real-time source whose audio arrived long ago (as after a slow window): only the newest ready window is
    scored, the others are counted as skipped, the warning comes once; the API without drop_late scores them all."""
    tagger = Tagger(tiny_model())
    audio = 0.1 * np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32)
    late = StreamingTagger(tagger, 16000, window_s=0.5, hop_s=0.05, drop_late=True)
    hops = late.feed(audio[:16000 * 2], arrived=time.monotonic() - 10.0)
    assert len(hops) == 1 and hops[0].skipped == 30 and hops[0].index == 30  # windows 0..30 ready, 30 skipped
    assert hops[0].start_s == pytest.approx(1.5) and "falling behind" in hops[0].warning
    more = late.feed(audio[16000 * 2:], arrived=time.monotonic() - 10.0)
    assert len(more) == 1 and more[0].skipped == 30 + 19 and more[0].warning is None
    every = StreamingTagger(tagger, 16000, window_s=0.5, hop_s=0.05)
    assert len(every.feed(audio[:16000 * 2], arrived=time.monotonic() - 10.0)) == 31


# ---------------------------------------------------------------------------------------------------------------------
# Known truth with a trained AST


@pytest.mark.slow
def test_trained_detector_live_events_within_one_hop(tmp_path):
    """A tiny AST trained to detect a 1 kHz tone (as the events tests train it), fed a 44.1 kHz stereo scene with tones
    at known seconds in random blocks: one event per tone, onset and offset within one hop of the truth, each
    opened while the tone is still sounding and closed within two hops of its end; the window scores equal
    `events`' (score_stream on the same file) to 1e-5."""
    from helpers import train_tone_detector, write_scene

    truth = [(5.0, 8.5), (14.3, 18.0), (24.6, 27.1)]
    scene = write_scene(tmp_path / "scene.wav", 32.0, truth, 44100, channels=2, seed=5)
    data, rate = sf.read(str(scene), dtype="float32", always_2d=True)
    tagger = Tagger(train_tone_detector())
    hop = 0.25
    config = EventConfig(threshold=0.5, median_windows=3)
    streamer = StreamingTagger(tagger, rate, 2, window_s=1.0, hop_s=hop, events=config)
    hops = feed_random_blocks(streamer, data, seed=7)
    assert hops[-1].scores is not None  # the tones end before the stream: no window-less closing hop
    closed = [e for h in hops for e in h.closed]
    assert len(closed) == len(truth), closed
    for event, (a, b) in zip(closed, truth, strict=True):
        assert abs(event.onset_s - a) <= hop and abs(event.offset_s - b) <= hop, (event, a, b)
    for (a, b), h in zip(truth, [h for h in hops if h.opened], strict=True):
        assert a <= h.end_s <= b  # the onset is reported while the tone is still sounding
    for (_, b), h in zip(truth, [h for h in hops if h.closed], strict=True):
        assert h.end_s - b <= 1.0 / 2 + 2 * hop  # the window reaching past the tone's end, plus the median's lag
    timeline = score_stream(tagger, scene, window_s=1.0, hop_s=hop)
    offline = torch.stack([timeline.scores[round(h.start_s / hop)] for h in hops])
    np.testing.assert_allclose(np.stack([h.scores for h in hops]), offline.numpy(), atol=1e-5, rtol=0)
