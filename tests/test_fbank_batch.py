"""The fast batched fbank: batch == single clips == torchaudio golden, chunking invisible, and the float64 path
equal to a numpy re-implementation written here from Kaldi's definition; `frame_transform` (the front end of the
ONNX graph) equal to that definition too.

References: tests/assets/golden_fbank.safetensors (torchaudio's compliance.kaldi.fbank, tools/make_golden.py), and
`kaldi_numpy` below (numpy float64: frames, DC removal, pre-emphasis with x[-1] := x[0], symmetric Hann, |rfft|^2
over 512 points, Kaldi mel triangles built from the mel formula, log with the float32-epsilon floor).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ast_audio.audio.fbank import KALDI_EPSILON, fbank, frame_transform
from ast_audio.errors import AudioInputError
from helpers import kaldi_numpy

GOLDEN = Path(__file__).parent / "assets" / "golden_fbank.safetensors"
TORCHAUDIO_ATOL = 1e-3  # the bound against torchaudio's Kaldi fbank
BATCH_ATOL = 1e-5  # a clip in a batch vs the same clip alone (the implementation makes them bit-equal)
FLOAT64_ATOL = 1e-6  # float64 path vs the float64 numpy definition (log domain)


def _wave(n: int, seed: int, dc: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / 16000
    x = 0.3 * torch.sin(2 * math.pi * (300 + 100 * seed) * t) + 0.05 * torch.randn(n, generator=gen,
                                                                                    dtype=torch.float64)
    return (x + dc).float()


@pytest.mark.parametrize("n", [400, 401, 560, 12345, 16000, 41000])
def test_batch_equals_single_clips(n):
    batch = torch.stack([_wave(n, seed, dc=0.1 * seed) for seed in range(5)])
    out = fbank(batch)
    assert out.shape == (5, 1 + (n - 400) // 160, 128)
    for i in range(5):
        torch.testing.assert_close(out[i], fbank(batch[i]), atol=BATCH_ATOL, rtol=0)


def test_batch_of_golden_clips_matches_torchaudio():
    """Each golden clip inside a batch (beside other clips of its length) still matches torchaudio to 1e-3."""
    golden = load_file(str(GOLDEN))
    names = sorted(k[: -len(".wave")] for k in golden if k.endswith(".wave"))
    assert len(names) >= 4
    for name in names:
        wave, expected = golden[f"{name}.wave"], golden[f"{name}.fbank"]
        batch = torch.stack([0.5 * wave.flip(0), wave, torch.roll(wave, 1000)])
        ours = fbank(batch)[1]
        diff = (ours - expected).abs().max().item()
        assert diff <= TORCHAUDIO_ATOL, f"{name}: max |ours - torchaudio| = {diff}"


@pytest.mark.parametrize("chunk", [1, 7, 98, 256, 5000])
def test_chunking_is_invisible(chunk):
    batch = torch.stack([_wave(16000, seed) for seed in range(3)])  # 98 frames each
    torch.testing.assert_close(fbank(batch, chunk_frames=chunk), fbank(batch), atol=BATCH_ATOL, rtol=0)


@pytest.mark.parametrize("remove_clip_dc", [True, False])
def test_float64_equals_numpy_definition(remove_clip_dc):
    wave = _wave(23456, seed=3, dc=0.05).double()
    expected = kaldi_numpy(wave.numpy(), remove_clip_dc=remove_clip_dc)
    ours = fbank(wave, remove_clip_dc=remove_clip_dc)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, atol=FLOAT64_ATOL, rtol=0)


def test_float32_close_to_numpy_definition():
    """float32 rounding only: within the same 1e-3 as torchaudio (which is float32 too)."""
    wave = _wave(48000, seed=1)
    np.testing.assert_allclose(fbank(wave).numpy(), kaldi_numpy(wave.numpy()), atol=1e-3, rtol=0)


def test_frame_transform_is_the_kaldi_frame_pipeline():
    """transform @ frame == the DFT of the DC-removed, pre-emphasised, windowed frame, on the bins it keeps, and
    |spectrum|^2 @ banks + log == the fbank of a one-frame clip."""
    transform, banks = frame_transform()
    assert transform.shape[1] == 400 and transform.shape[0] == 2 * banks.shape[0]
    assert banks.shape[1] == 128 and 250 <= banks.shape[0] <= 257
    frame = _wave(400, seed=5, dc=0.2).double().numpy()
    g = frame - frame.mean()
    p = g - 0.97 * np.concatenate([g[:1], g[:-1]])
    y = p * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399))
    dft = np.fft.rfft(y, n=512)
    spectrum = transform.numpy() @ frame  # (2K,)
    k = banks.shape[0]
    power = spectrum[:k] ** 2 + spectrum[k:] ** 2
    full_power = np.abs(dft) ** 2
    # the kept bins carry all the mel weight: the energies equal the dense product over all 257 bins
    np.testing.assert_allclose(power @ banks.numpy(), full_power @ kaldi_banks_dense(), rtol=1e-9, atol=1e-12)
    logmel = np.log(np.maximum(power @ banks.numpy(), KALDI_EPSILON))
    np.testing.assert_allclose(logmel, fbank(torch.from_numpy(frame), remove_clip_dc=False)[0].numpy(), atol=1e-9)


def kaldi_banks_dense() -> np.ndarray:
    """(257, 128) Kaldi mel weights from the definition (as in kaldi_numpy)."""
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    delta = (hi - lo) / 129
    fft_mel = mel(np.arange(256) * 16000 / 512)
    banks = np.zeros((257, 128))
    for j in range(128):
        up = (fft_mel - (lo + j * delta)) / delta
        down = ((lo + (j + 2) * delta) - fft_mel) / delta
        banks[:256, j] = np.maximum(0.0, np.minimum(up, down))
    return banks


def test_half_precision_input_is_computed_in_float32():
    wave = _wave(8000, seed=2)
    out = fbank(wave.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fbank(wave.to(torch.bfloat16).float()), atol=0, rtol=0)


def test_gradient_requests_are_refused_clearly():
    wave = _wave(4000, seed=4).requires_grad_()
    with pytest.raises(AudioInputError, match="not differentiable.*detach"):
        fbank(wave)
    with torch.no_grad():
        torch.testing.assert_close(fbank(wave), fbank(wave.detach()), atol=0, rtol=0)
