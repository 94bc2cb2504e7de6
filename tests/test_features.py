"""FeatureExtractor: pad/crop/normalise semantics, batch == per-item, parity with transformers, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from ast_audio import FrontendConfig
from ast_audio.audio.fbank import fbank, num_frames
from ast_audio.audio.features import FeatureExtractor
from ast_audio.errors import AudioInputError

MEAN, STD = -4.2677393, 4.5689974


def _wave(seconds: float, seed: int = 0, freq: float = 440.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return (0.4 * torch.sin(2 * torch.pi * freq * t) + 0.05 * torch.randn(t.shape, generator=g)).float()


def _extractor(target_length: int = 100, **changes) -> FeatureExtractor:
    return FeatureExtractor(FrontendConfig(target_length=target_length, mean=MEAN, std=STD, **changes))


def test_short_clip_is_zero_padded_in_log_mel_domain_then_normalised():
    x = _wave(0.5)  # 8000 samples -> 1 + (8000 - 400) // 160 = 48 frames
    fe = _extractor(100)
    out = fe(x)
    assert out.shape == (1, 100, 128) and out.dtype == torch.float32
    frames = fbank(x)
    assert frames.shape[0] == num_frames(8000) == 48
    torch.testing.assert_close(out[0, :48], (frames - MEAN) / (2 * STD))
    # Padding is 0 before normalisation, i.e. -mean / (2 std) = +0.467 after it (spec §2.1).
    torch.testing.assert_close(out[0, 48:], torch.full((52, 128), -MEAN / (2 * STD)))


def test_long_clip_keeps_the_first_frames():
    x = _wave(2.0)  # 198 frames
    out = _extractor(100)(x)
    torch.testing.assert_close(out[0], (fbank(x)[:100] - MEAN) / (2 * STD))


def test_exact_length_is_unchanged():
    x = _wave(1.0)  # 98 frames
    fe = _extractor(98)
    torch.testing.assert_close(fe(x)[0], fe.normalize(fe.frames(x)))


def test_frames_are_unnormalised_and_unpadded():
    x = _wave(0.7)
    torch.testing.assert_close(_extractor(100).frames(x), fbank(x))


def test_normalise_by_hand():
    fe = _extractor()
    x = torch.tensor([[MEAN, MEAN + 2 * STD, 0.0]])
    torch.testing.assert_close(fe.normalize(x), torch.tensor([[0.0, 1.0, -MEAN / (2 * STD)]]))


def test_batch_equals_per_item():
    fe = _extractor(120)
    same_length = torch.stack([_wave(1.3, seed=i, freq=200.0 * (i + 1)) for i in range(3)])  # (3, N)
    batched = fe(same_length)
    per_item = torch.cat([fe(w) for w in same_length])
    torch.testing.assert_close(batched, per_item, rtol=1e-5, atol=1e-5)  # batched matmul rounding only

    ragged = [_wave(s, seed=i) for i, s in enumerate((0.3, 1.0, 2.5))]
    out = fe(ragged)
    assert out.shape == (3, 120, 128)
    for i, w in enumerate(ragged):
        torch.testing.assert_close(out[i], fe(w)[0])
    torch.testing.assert_close(fe([w.numpy() for w in ragged]), out)


def test_silence_does_not_crash():
    out = _extractor(50)(torch.zeros(4000))
    # log floor: every mel energy is float32 epsilon
    torch.testing.assert_close(out[0, :23], torch.full((23, 128), (np.log(1.1920929e-07) - MEAN) / (2 * STD)))


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
@pytest.mark.parametrize("max_length, seconds", [(1024, 3.0), (128, 3.0), (300, 3.0)])
def test_matches_transformers_ast_feature_extractor(max_length, seconds):
    hf = ASTFeatureExtractor(num_mel_bins=128, max_length=max_length, mean=MEAN, std=STD,
                                          do_normalize=True)
    clips = [_wave(seconds, seed=1, freq=330.0).numpy(), _wave(1.1, seed=2, freq=2000.0).numpy()]
    expected = np.stack(hf(clips, sampling_rate=16000, return_tensors="np")["input_values"])
    ours = _extractor(max_length)([torch.from_numpy(c) for c in clips]).numpy()
    assert ours.shape == expected.shape == (2, max_length, 128)
    # Tolerance 1e-3 after normalisation (log-mel / 9.14): HF's numpy fbank is float64, ours float32, and ours
    # also removes the clip's DC first, which HF skips; Kaldi removes each frame's DC anyway, so that changes
    # nothing beyond rounding.
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)


def test_clip_dc_removal_changes_only_rounding():
    x = _wave(1.0) + 0.2  # a strong DC offset
    with_dc = FeatureExtractor(FrontendConfig(target_length=98), remove_clip_dc=False)(x)
    without = FeatureExtractor(FrontendConfig(target_length=98), remove_clip_dc=True)(x)
    torch.testing.assert_close(with_dc, without, rtol=0, atol=1e-3)


def test_bad_inputs():
    fe = _extractor()
    with pytest.raises(AudioInputError, match="shorter than one 25 ms window"):
        fe(torch.zeros(399))
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        fe(torch.tensor([0.0, float("nan")] * 400))
    with pytest.raises(AudioInputError, match="expects 16000 Hz"):
        fe(_wave(1.0), sample_rate=44100)
    with pytest.raises(AudioInputError, match=r"got shape \(2, 2, 800\)"):
        fe(torch.zeros(2, 2, 800))
    with pytest.raises(AudioInputError, match="dtype torch.int16"):
        fe(torch.zeros(800, dtype=torch.int16))
    with pytest.raises(AudioInputError, match="empty list"):
        fe([])
    with pytest.raises(AudioInputError, match=r"waveform 1: expected a 1-D"):
        fe([torch.zeros(800), torch.zeros(2, 800)])
    with pytest.raises(AudioInputError, match="load_audio"):
        fe("clip.wav")
