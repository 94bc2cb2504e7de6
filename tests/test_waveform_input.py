"""In-memory waveforms (numpy arrays and torch tensors) at any rate: every entry point that takes one (Tagger.tag,
score_stream, Embedder.embed, explain) takes `sample_rate=`, resamples it as a file of that rate is resampled, and
refuses a waveform without a rate in one line (issue 19, item 2: a 44.1 kHz tensor was scored as 16 kHz audio and
a numpy array was refused)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.audio.io import load_audio
from ast_audio.errors import AudioInputError, ConfigError
from ast_audio.infer.embed import Embedder
from ast_audio.infer.explain import explain
from ast_audio.infer.tagger import Tagger, score_stream
from conftest import tiny_model

RATE = 44100
# A file is resampled by soxr's streaming resampler block by block, an array by its one-shot resampler: the two
# differ in float32 rounding only, so scores agree to this (a 44.1 kHz tone misread as 16 kHz is off by > 1e-2).
ATOL = 1e-5
WINDOWS = {"window_s": 1.0, "hop_s": 0.5}


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(tiny_model(seed=3))


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> tuple[np.ndarray, str]:
    """A 3 s 44.1 kHz tone sweeping 300 Hz -> 3 kHz (so the rate matters) plus noise, as float32 samples and as a
    float 44.1 kHz WAV holding the same samples."""
    t = np.arange(3 * RATE) / RATE
    rng = np.random.default_rng(0)
    x = (0.4 * np.sin(2 * np.pi * (300 * t + 450 * t ** 2)) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    path = tmp_path_factory.mktemp("wave") / "tone44k.wav"
    sf.write(str(path), x, RATE, subtype="FLOAT")
    return x, str(path)


def test_numpy_at_44k_scores_as_its_wav_file(tagger, tone):
    """The tone as a numpy array with sample_rate=44100 gets the windows and scores of the same tone tagged from its
    44.1 kHz WAV; a torch tensor gives the numpy array's scores exactly."""
    samples, path = tone
    (from_file,) = tagger.tag(path, **WINDOWS)
    (from_numpy,) = tagger.tag(samples, sample_rate=RATE, **WINDOWS)
    (from_tensor,) = tagger.tag(torch.from_numpy(samples), sample_rate=RATE, **WINDOWS)
    assert from_numpy.duration_s == pytest.approx(3.0) == from_file.duration_s
    assert [(w.start_s, w.end_s) for w in from_numpy.windows] == [(w.start_s, w.end_s) for w in from_file.windows]
    torch.testing.assert_close(torch.stack([w.scores for w in from_numpy.windows]),
                               torch.stack([w.scores for w in from_file.windows]), atol=ATOL, rtol=0)
    torch.testing.assert_close(from_numpy.scores, from_file.scores, atol=ATOL, rtol=0)
    torch.testing.assert_close(from_tensor.scores, from_numpy.scores, atol=0, rtol=0)
    # What main did: the same samples read as 16 kHz audio (2.76x longer, pitched down) score otherwise.
    (misread,) = tagger.tag(samples, sample_rate=16000, **WINDOWS)
    assert misread.duration_s == pytest.approx(3 * RATE / 16000)
    assert (misread.scores - from_file.scores).abs().max() > 100 * ATOL


def test_score_stream_embed_and_explain_take_the_rate(tagger, tone):
    """score_stream, Embedder.embed and explain resample an array as its file is resampled."""
    samples, path = tone
    a = score_stream(tagger, samples, sample_rate=RATE, **WINDOWS)
    b = score_stream(tagger, path, **WINDOWS)
    assert a.duration_s == pytest.approx(b.duration_s) and torch.equal(a.starts_s, b.starts_s)
    torch.testing.assert_close(a.scores, b.scores, atol=ATOL, rtol=0)

    embedder = Embedder(tagger.model)
    (ours,) = embedder.embed([samples], sample_rate=RATE, **WINDOWS)
    (theirs,) = embedder.embed([path], **WINDOWS)
    np.testing.assert_allclose(ours.windows, theirs.windows, atol=1e-4, rtol=0)

    decoded = load_audio(path)  # the file at the model's 16 kHz, resampled at once as the array is
    expected = explain(tagger.model, decoded, sample_rate=16000, class_name=tagger.labels[0])
    got = explain(tagger.model, samples, sample_rate=RATE, class_name=tagger.labels[0])
    torch.testing.assert_close(got.fbank, expected.fbank, atol=0, rtol=0)
    torch.testing.assert_close(got.relevance, expected.relevance, atol=0, rtol=0)


@pytest.mark.parametrize("call", ["tag", "tag_list", "score_stream", "embed", "explain"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_waveform_without_its_rate_is_refused_in_one_line(tagger, tone, call, kind):
    samples = tone[0] if kind == "numpy" else torch.from_numpy(tone[0])
    run = {
        "tag": lambda: tagger.tag(samples),
        "tag_list": lambda: tagger.tag([tone[1], samples], on_error=lambda i, e: None),  # not a per-input error
        "score_stream": lambda: score_stream(tagger, samples),
        "embed": lambda: list(Embedder(tagger.model).embed(samples)),
        "explain": lambda: explain(tagger.model, samples),
    }[call]
    with pytest.raises(ConfigError) as info:
        run()
    message = str(info.value)
    assert "\n" not in message and "needs its rate: pass sample_rate=<Hz>" in message


@pytest.mark.parametrize("samples, rate, error, message", [
    (np.zeros((2, 16000), np.float32), 16000, AudioInputError, r"got shape \(2, 16000\); average the channels"),
    (torch.zeros(16000, 2), 16000, AudioInputError, r"got shape \(16000, 2\); average the channels"),
    (np.zeros(16000, np.int16), 16000, AudioInputError, r"expected float samples .* got dtype int16"),
    (np.full(16000, 3000.0, np.float32), 16000, AudioInputError, "peak sample is 3000"),
    (np.zeros(16000, np.float32), 16000.0, ConfigError, "sample_rate must be a positive integer"),
    (np.zeros(16000, np.float32), 0, ConfigError, "sample_rate must be a positive integer"),
    ([0.0] * 16000, 16000, AudioInputError, "expected a path, or a waveform as a numpy array or torch tensor"),
])
def test_bad_waveforms_say_what_to_do(tagger, samples, rate, error, message):
    with pytest.raises(error, match=message):
        tagger.tag([samples], sample_rate=rate)


def test_numpy_integer_rate_and_float64_samples(tagger, tone):
    """A numpy integer rate (e.g. from a header read with numpy) and float64 samples are accepted as such."""
    samples = tone[0]
    (a,) = tagger.tag(samples, sample_rate=RATE, **WINDOWS)
    (b,) = tagger.tag(samples.astype(np.float64), sample_rate=np.int64(RATE), **WINDOWS)
    torch.testing.assert_close(a.scores, b.scores, atol=ATOL, rtol=0)
