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
# The bound: within 1e-3 absolute per bin of torchaudio's Kaldi fbank, for every bin that carries energy.
TORCHAUDIO_ATOL = 1e-3
# Near-silent bins: float32 rounding in the FFT gives each frequency bin an absolute error of about
# eps * log2(512) * the frame's amplitude (9 butterfly stages, each rounding once relative to the frame), so a bin's
# power P has a relative error of about 2 * 9 * eps * sqrt(E / P), E the frame's power; in the log domain that is
# the absolute error. Two float32 implementations (or one on AVX2 and one on AVX-512) may each be that far off.
FFT_STAGES = 9
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def assert_logmel_close(ours, expected, atol: float = TORCHAUDIO_ATOL, name: str = "") -> None:
    """Per bin: |ours - expected| <= atol + 2 * 9 * eps * sqrt(E_frame / P_bin), with P_bin the expected bin's power
    and E_frame the frame's total mel power. Bins with energy get about `atol` (the error term is < 2.2e-5 for bins
    within 20 dB of their frame, < 3.1e-4 within 40 dB); only bins far below their frame get the rounding bound
    their energy implies."""
    ours = np.asarray(ours, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, name
    power = np.exp(expected)  # (T, F)
    frame = power.sum(axis=1, keepdims=True)  # (T, 1)
    bound = atol + 2 * FFT_STAGES * FLOAT32_EPS * np.sqrt(frame / power)
    excess = np.abs(ours - expected) - bound
    worst = np.unravel_index(int(excess.argmax()), excess.shape)
    assert excess.max() <= 0, (f"{name}: bin {worst} differs by {abs(ours - expected)[worst]:.3g} > its bound "
                               f"{bound[worst]:.3g} (log energy {expected[worst]:.2f})")


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
        assert_logmel_close(fbank(wave), expected, name=name)


def test_matches_transformers_numpy_extractor():
    from transformers import ASTFeatureExtractor

    wave = _signal(3.0)
    extractor = ASTFeatureExtractor(do_normalize=False, max_length=num_frames(wave.numel()))
    expected = extractor(wave.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0]
    ours = fbank(wave).numpy()
    assert ours.shape == expected.shape == (298, 128)
    # Same bound as against torchaudio (float32 rounding of two implementations).
    assert_logmel_close(ours, expected)


def test_near_silent_bound_is_tight_where_energy_is():
    """The energy term only widens bins far below their frame: 40 dB down it adds < 3.1e-4 to the 1e-3 bound, and
    a 1.3e-3 error on a bin at the frame's level still fails."""
    expected = np.log(np.array([[1.0, 1.0, 1e-4]]))  # two loud bins and one 40 dB down
    assert 2 * FFT_STAGES * FLOAT32_EPS * np.sqrt(2.0001 / 1e-4) < 3.1e-4
    with pytest.raises(AssertionError, match="bin"):
        assert_logmel_close(expected + np.array([[1.3e-3, 0, 0]]), expected)
    assert_logmel_close(expected + np.array([[9e-4, 0, 9e-4]]), expected)


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
