"""Streamed window scores, event detection, output formats, thresholds and calibration (ast_audio.infer.events)."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.ndimage import median_filter
from sklearn.metrics import f1_score, precision_score

from ast_audio import AST, FrontendConfig
from ast_audio.audio.io import load_audio, read_window
from ast_audio.errors import AudioInputError, ConfigError
from ast_audio.infer.calibrate import calibrate, calibration_table, read_thresholds, write_thresholds
from ast_audio.infer.events import Event, EventConfig, detect_events, median_smooth
from ast_audio.infer.formats import format_events
from ast_audio.infer.stream import Timeline
from ast_audio.infer.tagger import Tagger, score_stream
from ast_audio.labels import parse_names
from conftest import tiny_config, tiny_model
from helpers import brute_force_timeline, make_timeline, write_scene

# ---------------------------------------------------------------------------------------------------------------------
# A model whose output is known without training


def mel_bin_of(hz: float, num_bins: int = 128, sample_rate: int = 16000, low: float = 20.0) -> float:
    """Kaldi mel bin index whose centre is `hz` (from the definition: bins equally spaced in 1127 ln(1 + f/700))."""
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    delta = (mel(sample_rate / 2) - mel(low)) / (num_bins + 1)
    return (mel(hz) - mel(low)) / delta - 1


class ToneFractionAST(AST):
    """A real AST object (config, front end, labels) whose forward is a known function of its input: the logit of
    class "tone" is 40 * (fraction of frames in which the mel bins around 1 kHz stand out - 0.5), so its score
    crosses 0.5 exactly when a 1 kHz tone fills half of the window; "other" is the opposite."""

    def __init__(self, target_length: int = 100) -> None:
        config = tiny_config(num_classes=2, input_tdim=target_length)
        super().__init__(config, frontend=FrontendConfig(target_length=target_length), labels=("tone", "other"))
        centre = round(mel_bin_of(1000.0))
        self.band = (centre - 2, centre + 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        band = x[:, :, self.band[0]:self.band[1]].mean(dim=-1)  # (B, T, F) -> (B, T)
        tonal = ((band - x.mean(dim=-1)) > 0.3).float().mean(dim=1)  # (B,) fraction of tonal frames
        logit = 40.0 * (tonal - 0.5)
        return torch.stack([logit, -logit], dim=1)  # (B, 2)


# ---------------------------------------------------------------------------------------------------------------------
# score_stream equals the in-memory Tagger


@pytest.mark.parametrize("window_s,hop_s,batch_size", [(None, None, 8), (0.5, 0.2, 3), (0.4, 0.4, 1), (1.0, 0.33, 5)])
def test_stream_and_tagger_equal_brute_force_windows(tmp_path, window_s, hop_s, batch_size):
    """A 44.1 kHz stereo file: the streamed window scores (blocks + streaming soxr + downmix) of `score_stream` and of
    `Tagger.tag` each equal a brute-force loop over the windows of the file decoded whole, calling the model on
    each window alone (1e-5; the resamplers differ only in their block edges)."""
    rng = np.random.default_rng(1)
    data = (0.2 * rng.standard_normal((44100 * 7 + 321, 2))).astype(np.float32)
    data[:, 1] *= 0.5  # channels differ, so the downmix matters
    path = tmp_path / "a.wav"
    sf.write(str(path), data, 44100, subtype="FLOAT")
    tagger = Tagger(tiny_model())
    expected = brute_force_timeline(tagger.model, load_audio(path, sample_rate=16000), window_s, hop_s)
    timeline = score_stream(tagger, path, window_s=window_s, hop_s=hop_s, batch_size=batch_size)
    result = tagger.tag(path, window_s=window_s, hop_s=hop_s)[0]
    tagged = torch.stack([w.scores for w in result.windows])  # (N, C)
    for got, starts, ends in [(timeline.scores, timeline.starts_s.tolist(), timeline.ends_s.tolist()),
                              (tagged, [w.start_s for w in result.windows], [w.end_s for w in result.windows])]:
        assert got.shape == expected.scores.shape
        torch.testing.assert_close(got, expected.scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(starts, expected.starts_s.numpy(), atol=1e-9)
        np.testing.assert_allclose(ends, expected.ends_s.numpy(), atol=1e-9)
    assert timeline.duration_s == pytest.approx(expected.duration_s, abs=1e-9)
    assert result.duration_s == pytest.approx(expected.duration_s, abs=1e-9)
    assert (timeline.window_s, timeline.hop_s) == pytest.approx((expected.window_s, expected.hop_s))
    assert timeline.labels == tagger.labels


def test_stream_waveform_and_short_clip(tmp_path):
    """Waveform input equals the file path; a clip shorter than one window is one zero-padded window."""
    tagger = Tagger(tiny_model())
    wave = (0.1 * torch.randn(16000 * 3, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    path = tmp_path / "w.wav"
    sf.write(str(path), wave.numpy(), 16000, subtype="FLOAT")
    a = score_stream(tagger, wave, window_s=0.7, hop_s=0.3, sample_rate=16000)
    b = score_stream(tagger, path, window_s=0.7, hop_s=0.3)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=0)
    short = wave[:8000]
    timeline = score_stream(tagger, short, sample_rate=16000)
    assert timeline.scores.shape == (1, 5)
    torch.testing.assert_close(timeline.scores[0], tagger.tag(short, sample_rate=16000)[0].scores, atol=1e-6, rtol=0)
    assert timeline.starts_s.tolist() == [0.0] and timeline.ends_s.tolist() == [0.5]


def test_stream_progress_and_bad_input(tmp_path):
    tagger = Tagger(tiny_model())
    calls: list[tuple[float, float]] = []
    score_stream(tagger, torch.zeros(16000 * 4), window_s=0.5, hop_s=0.5, batch_size=2, sample_rate=16000,
                 progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4.0, 4.0)
    assert all(b >= a for (a, _), (b, _) in zip(calls, calls[1:], strict=False))  # monotone
    with pytest.raises(AudioInputError, match="no such file"):
        score_stream(tagger, tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioInputError, match="bad.wav"):
        score_stream(tagger, tmp_path / "bad.wav")
    with pytest.raises(AudioInputError, match="1-D"):
        score_stream(tagger, torch.zeros(2, 100), sample_rate=16000)
    with pytest.raises(ConfigError):
        score_stream(tagger, torch.zeros(16000), batch_size=0, sample_rate=16000)


def test_read_window_equals_decoded_slice(tmp_path):
    from ast_audio.audio.io import load_audio

    path = write_scene(tmp_path / "s.wav", 20.0, [(3.0, 5.0)], 22050, channels=2)
    whole = load_audio(path, 16000)
    part = read_window(path, 16000, 7.25, 16000 * 2)
    torch.testing.assert_close(part, whole[116000:116000 + 32000], atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="past the end"):
        read_window(path, 16000, 25.0, 100)


# ---------------------------------------------------------------------------------------------------------------------
# Known truth: tones placed in minutes of noise


def test_events_known_truth_tones_in_noise(tmp_path):
    """Two minutes of noise at 32 kHz (resampled while streaming) with three 1 kHz tones: each comes back as one
    "tone" event whose onset and offset are within one hop of the truth, and there is no other tone event."""
    truth = [(20.0, 23.5), (61.3, 65.0), (100.2, 108.0)]
    path = write_scene(tmp_path / "scene.wav", 120.0, truth, 32000)
    tagger = Tagger(ToneFractionAST())
    hop = 0.25
    timeline = score_stream(tagger, path, window_s=1.0, hop_s=hop, batch_size=16)
    assert timeline.duration_s == pytest.approx(120.0)
    events = [e for e in detect_events(timeline, EventConfig(threshold=0.5, median_windows=3, only=("tone",),
                                                             **CELLS))]
    assert len(events) == len(truth), events
    for event, (a, b) in zip(events, truth, strict=True):
        assert event.label == "tone"
        assert abs(event.onset_s - a) <= hop, (event, a)  # within one hop (brief)
        assert abs(event.offset_s - b) <= hop, (event, b)
        assert event.score > 0.99


# ---------------------------------------------------------------------------------------------------------------------
# detect_events against definitions written here


# The nearest-centre cells rule of the module docstring (`EventConfig()` thresholds the overlap-add grid instead).
CELLS = dict(grid="cells", interpolate=False)


def reference_active(x: np.ndarray, high: float, low: float) -> np.ndarray:
    """Window i is active iff some k <= i has x_k >= high and x_m >= low for every m in [k, i] (hysteresis)."""
    n = x.shape[0]
    return np.array([any(x[k] >= high and all(x[m] >= low for m in range(k, i + 1)) for k in range(i + 1))
                     for i in range(n)])


def reference_events(timeline: Timeline, active: np.ndarray, step: float = 1e-3) -> list[tuple[float, float]]:
    """Events as maximal stretches of instants whose nearest window centre is active, sampled every `step` s."""
    centres = timeline.centres_s.numpy()
    t = np.arange(0.0, timeline.duration_s, step) + step / 2
    owner = np.abs(t[:, None] - centres[None, :]).argmin(axis=1)
    on = active[owner]
    out, i = [], 0
    while i < len(t):
        if on[i]:
            j = i
            while j + 1 < len(t) and on[j + 1]:
                j += 1
            out.append((t[i] - step / 2, t[j] + step / 2))
            i = j + 1
        else:
            i += 1
    return out


def test_median_smooth_matches_scipy():
    x = np.random.default_rng(0).random((37, 4))
    for k in (1, 3, 5, 9):
        np.testing.assert_allclose(median_smooth(x, k), median_filter(x, size=(k, 1), mode="nearest"), atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_events_match_definition(seed):
    """Random scores: events = the nearest-centre stretches of the hysteresis-active windows (1 ms sampling)."""
    rng = np.random.default_rng(seed)
    scores = np.clip(np.cumsum(rng.normal(0, 0.15, size=(60, 3)), axis=0) * 0.3 + 0.4, 0, 1)
    timeline = make_timeline(scores, window_s=2.0, hop_s=0.5)
    config = EventConfig(threshold=0.6, hysteresis=0.7, **CELLS)
    events = detect_events(timeline, config)
    for c, label in enumerate(timeline.labels):
        active = reference_active(scores[:, c], 0.6, 0.42)
        expected = reference_events(timeline, active)
        got = [(e.onset_s, e.offset_s) for e in events if e.label == label]
        assert len(got) == len(expected)
        for (a, b), (ea, eb) in zip(got, expected, strict=True):
            assert abs(a - ea) < 2e-3 and abs(b - eb) < 2e-3  # 1 ms sampling of the reference
    assert [(e.onset_s, e.label) for e in events] == sorted((e.onset_s, e.label) for e in events)


def test_events_cells_merge_min_duration_thresholds_filters():
    # 10 windows of 2 s every 1 s (centres 1, 2, ..., 10; duration 11 s).
    s = np.zeros((10, 3))
    s[1:3, 0] = 0.9  # windows 1-2 -> cells [1.5, 3.5)
    s[4, 0] = 0.9  # window 4 -> [4.5, 5.5)
    s[8:, 0] = 0.7  # windows 8-9 -> [8.5, 11] (the last cell runs to the end)
    s[0, 1] = 0.55  # window 0 -> [0, 1.5) (the first cell starts at 0)
    s[5, 2] = 0.3
    tl = make_timeline(s, window_s=2.0, hop_s=1.0, labels=("a", "b", "c"))
    got = [(e.label, e.onset_s, e.offset_s) for e in detect_events(tl, EventConfig(**CELLS))]
    assert got == [("b", 0.0, 1.5), ("a", 1.5, 3.5), ("a", 4.5, 5.5), ("a", 8.5, 11.0)]
    merged = detect_events(tl, EventConfig(merge_gap_s=1.0, only=("a",), **CELLS))
    assert [(e.onset_s, e.offset_s) for e in merged] == [(1.5, 5.5), (8.5, 11.0)]
    assert merged[0].score == pytest.approx(0.9)
    longer = detect_events(tl, EventConfig(min_duration_s=1.5, exclude=("b",), **CELLS))
    assert [(e.label, e.onset_s) for e in longer] == [("a", 1.5), ("a", 8.5)]
    per_class = detect_events(tl, EventConfig(threshold=0.95, thresholds={"a": 0.8, "c": 0.25}, **CELLS))
    assert [(e.label, e.onset_s) for e in per_class] == [("a", 1.5), ("a", 4.5), ("c", 5.5)]
    # Median over 3 windows: window 3 (between active 2 and 4) fills in, the isolated window 4 drops out.
    smoothed = detect_events(tl, EventConfig(median_windows=3, only=("a",), **CELLS))
    assert [(e.onset_s, e.offset_s) for e in smoothed] == [(1.5, 4.5), (8.5, 11.0)]
    with pytest.raises(ConfigError, match="unknown class name"):
        detect_events(tl, EventConfig(only=("nope",), **CELLS))
    with pytest.raises(ConfigError, match="unknown class name.*in the per-class thresholds"):
        detect_events(tl, EventConfig(thresholds={"zz": 0.5}, **CELLS))
    with pytest.raises(ConfigError, match="odd"):
        EventConfig(median_windows=4)
    with pytest.raises(ConfigError):
        EventConfig(hysteresis=0.0)


def test_parse_names_handles_commas_in_names():
    labels = ["Speech", "Music", "Male speech, man speaking", "Dog"]
    assert parse_names(["Speech,Music"], labels) == ["Speech", "Music"]
    assert parse_names(["Male speech, man speaking,Dog"], labels) == ["Male speech, man speaking", "Dog"]
    assert parse_names(["Dog", "Music"], labels) == ["Dog", "Music"]
    with pytest.raises(ConfigError, match="'Speach'.*'Speech'"):
        parse_names(["Speach"], labels)


# ---------------------------------------------------------------------------------------------------------------------
# Formats parse back

EVENTS = [Event("dog", 0.5, 2.25, 0.91), Event("Male speech, man speaking", 3661.0016, 3700.5, 0.6),
          Event("rain", 10.0, 12.125, 0.5)]


def test_json_and_csv_parse_back():
    items = json.loads(format_events(EVENTS, "json", file="x.wav"))
    assert [(i["file"], i["label"], i["onset_s"], i["offset_s"], i["score"]) for i in items] == [
        ("x.wav", e.label, round(e.onset_s, 6), round(e.offset_s, 6), round(e.score, 6)) for e in EVENTS]
    rows = list(csv.DictReader(io.StringIO(format_events(EVENTS, "csv", file="x.wav"))))
    assert list(rows[0]) == ["file", "label", "onset", "offset", "score"]
    for row, e in zip(rows, EVENTS, strict=True):
        assert row["file"] == "x.wav" and row["label"] == e.label
        assert float(row["onset"]) == pytest.approx(e.onset_s, abs=1e-6)
        assert float(row["offset"]) == pytest.approx(e.offset_s, abs=1e-6)
        assert float(row["score"]) == pytest.approx(e.score, abs=1e-6)


def test_audacity_and_srt_parse_back():
    lines = format_events(EVENTS, "audacity").splitlines()
    assert len(lines) == 3
    for line, e in zip(lines, EVENTS, strict=True):
        onset, offset, label = line.split("\t")
        assert (float(onset), float(offset), label) == pytest.approx((e.onset_s, e.offset_s, e.label), abs=1e-6)
    text = format_events(EVENTS, "srt")
    pattern = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+) \((\d\.\d\d)\)\n")
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    for n, (block, e) in enumerate(zip(blocks, EVENTS, strict=True), 1):
        m = pattern.fullmatch(block if block.endswith("\n") else block + "\n")
        assert m, block
        g = m.groups()
        onset = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        offset = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        assert int(g[0]) == n and g[9] == e.label and float(g[10]) == pytest.approx(e.score, abs=0.005)
        assert onset == pytest.approx(e.onset_s, abs=5e-4) and offset == pytest.approx(e.offset_s, abs=5e-4)
    assert "01:01:01,002 --> 01:01:40,500" in text  # 3661.0016 s, rounded to the millisecond
    assert format_events([], "srt") == "" and format_events([], "audacity") == ""
    with pytest.raises(ConfigError, match="unknown event format"):
        format_events(EVENTS, "xml")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# Thresholds and calibration


def test_thresholds_round_trip_and_errors(tmp_path):
    path = tmp_path / "t.csv"
    values = {"dog": 0.25, "Male speech, man speaking": 0.7}
    write_thresholds(values, path, stats={"dog": {"f1": 0.5, "precision": 0.4, "recall": 1.0}})
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["label", "threshold", "f1", "precision", "recall"]
    assert read_thresholds(path) == values
    (tmp_path / "bad.csv").write_text("name,value\ndog,0.3\n")
    with pytest.raises(ConfigError, match="label,threshold"):
        read_thresholds(tmp_path / "bad.csv")
    (tmp_path / "range.csv").write_text("label,threshold\ndog,1.5\n")
    with pytest.raises(ConfigError, match=r"range.csv:2"):
        read_thresholds(tmp_path / "range.csv")
    with pytest.raises(ConfigError, match="cannot read"):
        read_thresholds(tmp_path / "missing.csv")


def random_scores(seed: int, n: int = 200, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(int)
    s = np.clip(0.35 * y + rng.normal(0.35, 0.2, size=(n, c)), 0, 1)
    s = np.round(s, 2)  # many ties
    return s, y


@pytest.mark.parametrize("seed", range(3))
def test_calibrate_f1_is_optimal_brute_force(seed):
    s, y = random_scores(seed)
    labels = [f"c{i}" for i in range(s.shape[1])]
    table = calibration_table(s, y, labels, mode="f1")
    for c, label in enumerate(labels):
        grid = np.unique(np.r_[s[:, c], np.linspace(0, 1, 201)])
        best = max(f1_score(y[:, c], s[:, c] >= t, zero_division=0) for t in grid)
        chosen = table[label]["threshold"]
        achieved = f1_score(y[:, c], s[:, c] >= chosen, zero_division=0)
        assert achieved == pytest.approx(best, abs=1e-12)  # brute-force sweep (exact up to float rounding)
        assert table[label]["f1"] == pytest.approx(achieved, abs=1e-12)
        assert table[label]["precision"] == pytest.approx(precision_score(y[:, c], s[:, c] >= chosen), abs=1e-12)
    assert calibrate(s, y, labels) == {k: v["threshold"] for k, v in table.items()}


@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_calibrate_precision_lowest_threshold_brute_force(target):
    s, y = random_scores(7)
    labels = [f"c{i}" for i in range(s.shape[1])]
    thresholds = calibrate(s, y, labels, mode="precision", target_precision=target)
    for c, label in enumerate(labels):
        candidates = [t for t in np.unique(s[:, c])
                      if precision_score(y[:, c], s[:, c] >= t, zero_division=0) >= target]
        assert thresholds[label] == (min(candidates) if candidates else 1.0)


def test_calibrate_class_without_positives_and_bad_shapes():
    s = np.array([[0.1, 0.9], [0.2, 0.8]])
    y = np.array([[0, 1], [0, 1]])
    table = calibration_table(s, y, ["none", "all"])
    assert table["none"]["threshold"] == 1.0 and math.isnan(table["none"]["f1"])
    assert table["all"]["threshold"] == 0.8 and table["all"]["f1"] == 1.0
    with pytest.raises(ConfigError, match="must both be"):
        calibrate(s, y[:, :1], ["a", "b"])


def test_timeline_to_dict_and_cells():
    scores = np.array([[0.1, 0.9], [0.8, 0.3], [0.5, 0.6]])
    tl = Timeline(starts_s=torch.tensor([0.0, 1.0, 1.5], dtype=torch.float64),
                  ends_s=torch.tensor([2.0, 3.0, 3.5], dtype=torch.float64),
                  scores=torch.tensor(scores, dtype=torch.float32), labels=("a", "b"), duration_s=3.5, hop_s=1.0,
                  window_s=2.0)
    start, end = tl.cells()  # centres 1.0, 2.0, 2.5 (the last hop is short): bounds 0, 1.5, 2.25, 3.5
    np.testing.assert_allclose(start, [0.0, 1.5, 2.25])
    np.testing.assert_allclose(end, [1.5, 2.25, 3.5])
    full = json.loads(json.dumps(tl.to_dict()))
    assert full["labels"] == ["a", "b"] and full["duration_s"] == 3.5 and len(full["windows"]) == 3
    assert full["windows"][1] == {"start_s": 1.0, "end_s": 3.0, "scores": {"a": 0.8, "b": 0.3}}
    top = tl.to_dict(top_k=1)
    assert [list(w["scores"]) for w in top["windows"]] == [["b"], ["a"], ["b"]]
    with pytest.raises(ConfigError, match="threshold for 'a'"):
        EventConfig(thresholds={"a": 1.5})
