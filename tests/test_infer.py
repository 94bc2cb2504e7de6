"""Tagger: window placement, scores vs an independent computation, aggregation, batching, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import AST
from ast_audio.audio.features import FeatureExtractor
from ast_audio.audio.io import load_audio
from ast_audio.errors import AudioInputError, ConfigError
from ast_audio.infer.stream import stream_windows, window_starts
from ast_audio.infer.tagger import Tagger
from conftest import tiny_config, tiny_model, write_tone

RATE = 16000


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(tiny_model(seed=3))


def _noise(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * RATE), generator=g)


def _reference_scores(model: AST, clip: torch.Tensor) -> torch.Tensor:
    """Scores of one clip computed without the Tagger: features, model, sigmoid/softmax."""
    with torch.no_grad():
        logits = model(FeatureExtractor(model.frontend)(clip))[0]
    return logits.sigmoid() if model.multi_label else logits.softmax(-1)


def test_model_window_is_the_frontend_duration(tagger):
    # tiny model: 128 frames -> (127 * 160 + 400) samples = 20720 = 1.295 s
    assert tagger.max_window_s == pytest.approx(1.295)
    assert tagger.window_and_hop() == (20720, 10360)  # default hop: half the window


def test_window_starts():
    assert window_starts(100, 400, 200) == [0]
    assert window_starts(400, 400, 200) == [0]
    assert window_starts(401, 400, 200) == [0, 1]
    assert window_starts(1000, 400, 200) == [0, 200, 400, 600]  # 600 + 400 reaches the end exactly
    assert window_starts(1050, 400, 200) == [0, 200, 400, 600, 650]  # final window aligned to the end
    assert window_starts(1000, 400, 400) == [0, 400, 600]


def test_short_audio_is_one_padded_window(tagger):
    clip = _noise(0.8, seed=0)
    (result,) = tagger.tag(clip, top_k=3, sample_rate=RATE)
    assert result.duration_s == pytest.approx(0.8)
    assert [(w.start_s, w.end_s) for w in result.windows] == [(0.0, pytest.approx(0.8))]
    torch.testing.assert_close(result.scores, _reference_scores(tagger.model, clip))


def test_long_audio_sliding_windows_cover_the_file(tagger):
    clip = _noise(4.0, seed=1)  # 64000 samples, window 20720, hop 10360
    (result,) = tagger.tag(clip, top_k=2, sample_rate=RATE)
    starts = [0, 10360, 20720, 31080, 41440, 64000 - 20720]
    assert [round(w.start_s * RATE) for w in result.windows] == starts
    assert [round(w.end_s * RATE) for w in result.windows] == [s + 20720 for s in starts]
    assert result.windows[-1].end_s == pytest.approx(4.0)
    for w in result.windows:  # each window scored exactly like an independent clip
        piece = clip[round(w.start_s * RATE):round(w.end_s * RATE)]
        torch.testing.assert_close(w.scores, _reference_scores(tagger.model, piece), rtol=1e-5, atol=1e-6)


def test_custom_window_and_hop(tagger):
    clip = _noise(3.2, seed=2)
    (result,) = tagger.tag(clip, window_s=1.0, hop_s=0.75, sample_rate=RATE)
    assert [(w.start_s, w.end_s) for w in result.windows] == [
        (0.0, 1.0), (0.75, 1.75), (1.5, 2.5), (2.2, 3.2)]  # last one aligned to the end


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_aggregation_matches_window_scores(tagger, aggregate):
    (result,) = tagger.tag(_noise(3.0, seed=4), aggregate=aggregate, top_k=5, sample_rate=RATE)
    stacked = torch.stack([w.scores for w in result.windows])  # (W, C)
    expected = stacked.max(dim=0).values if aggregate == "max" else stacked.mean(dim=0)
    torch.testing.assert_close(result.scores, expected)
    assert [s for _, s in result.top] == sorted(expected.tolist(), reverse=True)[:5]
    assert [label for label, _ in result.top] == [tagger.labels[i] for i in expected.argsort(descending=True)[:5]]


def test_batch_of_files_equals_per_file(tagger):
    clips = [_noise(s, seed=10 + i) for i, s in enumerate((0.5, 2.7, 1.1, 4.3))]
    together = tagger.tag(clips, batch_size=5, sample_rate=RATE)
    for clip, result in zip(clips, together, strict=True):
        (alone,) = tagger.tag(clip, batch_size=1, sample_rate=RATE)
        assert [(w.start_s, w.end_s) for w in alone.windows] == [(w.start_s, w.end_s) for w in result.windows]
        torch.testing.assert_close(result.scores, alone.scores, rtol=1e-5, atol=1e-6)
        assert [label for label, _ in alone.top] == [label for label, _ in result.top]


def test_paths_are_loaded_and_named(tagger, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=2.0, sample_rate=44100)
    (from_path,) = tagger.tag([path])
    (from_wave,) = tagger.tag([load_audio(path)], names=["x"], sample_rate=RATE)
    assert from_path.name == str(path) and from_wave.name == "x"
    torch.testing.assert_close(from_path.scores, from_wave.scores)
    with pytest.raises(AudioInputError, match="no such file"):
        tagger.tag([tmp_path / "missing.wav"])


def test_sigmoid_for_multi_label_softmax_otherwise():
    multi = tiny_model(seed=5)
    single = AST(tiny_config(), frontend=multi.frontend, multi_label=False)
    single.load_state_dict(multi.state_dict())
    clip = _noise(1.0, seed=6)
    with torch.no_grad():
        logits = multi(FeatureExtractor(multi.frontend)(clip))[0]
    (sig,) = Tagger(multi).tag(clip, sample_rate=RATE)
    (soft,) = Tagger(single).tag(clip, sample_rate=RATE)
    torch.testing.assert_close(sig.scores, logits.sigmoid())
    torch.testing.assert_close(soft.scores, logits.softmax(-1))
    assert soft.scores.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_top_k_is_capped_and_json_serialisable(tagger):
    (result,) = tagger.tag(_noise(2.0, seed=7), top_k=50, sample_rate=RATE)
    assert len(result.top) == 5 == len(result.windows[0].top)  # the tiny model has 5 classes
    data = json.loads(json.dumps(result.to_dict(all_scores=True)))
    assert set(data) == {"file", "duration_s", "aggregate", "labels", "windows", "scores"}
    assert data["scores"] == pytest.approx(dict(zip(tagger.labels, result.scores.tolist(), strict=True)))
    assert data["windows"][-1]["end_s"] == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, "top_k"),
    ({"window_s": 0.0}, "window_s must be a positive"),
    ({"window_s": -1.0}, "window_s must be a positive"),
    ({"window_s": 5.0}, "longer than the model's input"),
    ({"window_s": 0.01}, "shorter than one 25 ms"),
    ({"window_s": 1.0, "hop_s": 1.5}, "hop_s must be in"),
    ({"hop_s": 0.0}, "hop_s must be in"),
    ({"aggregate": "median"}, "aggregate"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_raise_config_error(tagger, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tagger.tag(_noise(1.0, seed=8), **kwargs, sample_rate=RATE)


def test_bad_waveform_shape(tagger):
    with pytest.raises(AudioInputError, match="1-D"):
        tagger.tag([torch.zeros(2, 16000)], sample_rate=RATE)


# ---------------------------------------------------------------------------------------------------------------------
# Streaming: files are scored block by block with the same windows and scores as a waveform held in memory


@pytest.mark.parametrize("num_samples", [1, 399, 400, 20719, 20720, 20721, 65536, 65537, 100_000, 131_073])
@pytest.mark.parametrize("window, hop, chunk", [(20720, 10360, 65536), (16000, 4800, 1000), (400, 400, 7)])
def test_stream_windows_places_windows_like_window_starts(num_samples, window, hop, chunk):
    """Windows cut from a stream of chunks are window_starts' windows, with the samples at those positions."""
    signal = np.arange(num_samples, dtype=np.float32)
    chunks = (signal[i:i + chunk] for i in range(0, num_samples, chunk))
    got = list(stream_windows(chunks, window, hop))
    assert [s for s, _ in got] == window_starts(num_samples, window, hop)
    for start, samples in got:
        np.testing.assert_array_equal(samples, signal[start:start + window])
    assert list(stream_windows(iter([]), window, hop)) == []  # no samples, no window


def test_file_is_streamed_with_the_scores_of_the_decoded_waveform(tagger, tmp_path):
    """An 8 kHz stereo file (so resampled and downmixed while streaming, in 65536-frame blocks): windows equal those of
    the waveform load_audio decodes at once, scores within 1e-5 (the streaming and one-shot soxr resamplers differ
    in float32 rounding only)."""
    rng = np.random.default_rng(3)
    data = (0.2 * rng.standard_normal((8000 * 19 + 123, 2))).astype(np.float32)  # 19 s: 3 blocks at 8 kHz
    data[:, 1] *= 0.5
    path = tmp_path / "stereo8k.flac"
    sf.write(str(path), data, 8000)
    (streamed,) = tagger.tag(path, window_s=1.0, hop_s=0.3, top_k=3)
    (in_memory,) = tagger.tag(load_audio(path), window_s=1.0, hop_s=0.3, top_k=3, sample_rate=RATE)
    assert streamed.name == str(path)
    assert streamed.duration_s == pytest.approx(in_memory.duration_s, abs=1e-9)
    assert [(w.start_s, w.end_s) for w in streamed.windows] == [(w.start_s, w.end_s) for w in in_memory.windows]
    torch.testing.assert_close(torch.stack([w.scores for w in streamed.windows]),
                               torch.stack([w.scores for w in in_memory.windows]), atol=1e-5, rtol=0)
    torch.testing.assert_close(streamed.scores, in_memory.scores, atol=1e-5, rtol=0)


def test_bad_file_among_many_is_reported_and_the_rest_scored_as_alone(tagger, tmp_path):
    """With on_error, a missing file and a file that fails mid-stream (a NaN in its third block) are reported with
    their index and left out; the others (batched across files) score as they do alone."""
    good = [write_tone(tmp_path / f"g{i}.wav", seconds=s, freq=300.0 * (i + 1)) for i, s in enumerate((0.6, 5.0))]
    nan = np.full(16000 * 10, 0.1, dtype=np.float32)
    nan[65536 * 2 + 5] = np.nan  # found only when the third block is decoded, after windows were scored
    sf.write(str(tmp_path / "nan.wav"), nan, 16000, subtype="FLOAT")
    inputs = [good[0], tmp_path / "missing.wav", tmp_path / "nan.wav", good[1]]
    errors: list[tuple[int, str]] = []
    results = tagger.tag(inputs, batch_size=4, on_error=lambda i, exc: errors.append((i, str(exc))))
    assert [i for i, _ in errors] == [1, 2]
    assert "no such file" in errors[0][1] and "NaN" in errors[1][1]
    assert [r.name for r in results] == [str(good[0]), str(good[1])]
    for path, result in zip(good, results, strict=True):
        (alone,) = tagger.tag(path, batch_size=1)
        torch.testing.assert_close(result.scores, alone.scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(AudioInputError, match="NaN"):  # without on_error: raise
        tagger.tag(inputs[2:])


def test_too_short_inputs_say_so(tagger, tmp_path):
    with pytest.raises(AudioInputError, match="shorter than one 25 ms analysis window"):
        tagger.tag(torch.zeros(399), sample_rate=RATE)
    with pytest.raises(AudioInputError, match="0 samples"):
        tagger.tag(torch.zeros(0), sample_rate=RATE)
    sf.write(str(tmp_path / "short.wav"), np.zeros(300, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match=r"short.wav: audio is 18.8 ms long"):
        tagger.tag(tmp_path / "short.wav")
