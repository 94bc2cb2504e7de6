"""The Kaldi fbank against independent references and hand-checked properties.

References:
- torchaudio's `compliance.kaldi.fbank` (the function the reference AST calls), through golden outputs in
  tests/assets/golden_fbank.safetensors made by tools/make_golden.py in a torchaudio environment
  (torchaudio cannot be installed beside this project's torch);
- transformers' numpy `ASTFeatureExtractor` path, an independent re-implementation of the same Kaldi maths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ast_audio.audio.fbank import KALDI_EPSILON, fbank, mel_banks, num_frames
from ast_audio.errors import AudioInputError

GOLDEN = Path(__file__).parent / "assets" / "golden_fbank.safetensors"
# The bound: within 1e-3 absolute per bin of torchaudio's Kaldi fbank.
TORCHAUDIO_ATOL = 1e-3


def _signal(seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n, dtype=torch.float64) / 16000
    x = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 3000 * t * (1 + t))
    x = x + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.float()


def test_matches_torchaudio_golden():
    golden = load_file(str(GOLDEN))
    names = sorted(k[: -len(".wave")] for k in golden if k.endswith(".wave"))
    assert len(names) >= 4
    for name in names:
        wave, expected = golden[f"{name}.wave"], golden[f"{name}.fbank"]
        ours = fbank(wave)
        assert ours.shape == expected.shape, name
        diff = (ours - expected).abs().max().item()
        assert diff <= TORCHAUDIO_ATOL, f"{name}: max |ours - torchaudio| = {diff}"


def test_matches_transformers_numpy_extractor():
    from transformers import ASTFeatureExtractor

    wave = _signal(3.0)
    extractor = ASTFeatureExtractor(do_normalize=False, max_length=num_frames(wave.numel()))
    expected = extractor(wave.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0]
    ours = fbank(wave).numpy()
    assert ours.shape == expected.shape == (298, 128)
    # Same 1e-3 absolute bound as against torchaudio (float32 rounding of two implementations).
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("seconds,frames", [(10.0, 998), (5.0, 498), (1.0, 98), (10.24, 1022), (0.025, 1)])
def test_frame_counts(seconds, frames):
    n = round(seconds * 16000)
    assert num_frames(n) == frames
    assert fbank(torch.zeros(n) + 0.1 * torch.randn(n)).shape == (frames, 128)


def test_silence_is_the_log_floor():
    out = fbank(torch.zeros(16000))
    assert torch.all(out == torch.tensor(KALDI_EPSILON).log())


def test_tone_peaks_in_its_mel_bin():
    """A 1 kHz tone's energy lands in the mel filter whose centre is nearest 1 kHz (Kaldi mel scale)."""
    t = torch.arange(32000, dtype=torch.float64) / 16000
    out = fbank((0.5 * torch.sin(2 * math.pi * 1000 * t)).float())
    peak = out.mean(0).argmax().item()
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    lo, hi = mel(20), mel(8000)
    centres = [lo + (i + 1) * (hi - lo) / 129 for i in range(128)]
    assert abs(peak - min(range(128), key=lambda i: abs(centres[i] - mel(1000)))) <= 1


def test_gain_shifts_log_energy():
    """Doubling the amplitude multiplies power by 4: +ln 4 in every bin above the floor."""
    wave = _signal(1.0)
    quiet, loud = fbank(wave), fbank(2 * wave)
    floor = math.log(KALDI_EPSILON)
    # The lowest filters are narrower than one 31.25 Hz FFT bin and catch no bin at all: they stay at the floor.
    empty = (quiet == floor).all(0)
    assert 0 < empty.sum() < 8 and torch.all(loud[:, empty] == floor)
    above = quiet > floor + 2  # energies clamped at the floor (or within e^2 of it) cannot shift by ln 4
    assert above.float().mean() > 0.9
    diff = (loud - quiet)[above]
    torch.testing.assert_close(diff, torch.full_like(diff, math.log(4)), atol=1e-4, rtol=0)


def test_clip_dc_changes_nothing():
    """Per-frame DC removal makes a clip offset irrelevant (up to float rounding)."""
    wave = _signal(1.0).double()
    torch.testing.assert_close(fbank(wave + 0.2, remove_clip_dc=False), fbank(wave), atol=1e-9, rtol=0)


def test_batch_equals_items_and_float64_agrees():
    batch = torch.stack([_signal(2.0, seed=s) for s in range(3)])
    out = fbank(batch)
    assert out.shape == (3, 198, 128)
    for i in range(3):
        torch.testing.assert_close(out[i], fbank(batch[i]), atol=1e-5, rtol=0)
    torch.testing.assert_close(fbank(batch.double()).float(), out, atol=1e-3, rtol=0)


def test_mel_banks_are_kaldi_triangles():
    banks = mel_banks(128, 512, 16000)
    assert banks.shape == (257, 128)
    assert torch.all(banks[-1] == 0) and torch.all(banks[0] == 0)  # DC below 20 Hz and Nyquist get no weight
    assert torch.all(banks.max(0).values <= 1) and torch.all(banks >= 0)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(399), "shorter than one"),
    (torch.zeros(2, 3, 1000), "shape"),
    (torch.zeros(1000, dtype=torch.int16), "float"),
])
def test_bad_input(bad, match):
    with pytest.raises(AudioInputError, match=match):
        fbank(bad)
