"""Training augmentation as the reference dataloader does it (spec §2.2-2.4), as pure functions.

Every random draw comes from an explicit `torch.Generator`, so that `ClipDataset` can seed one generator per
(seed, epoch, index) and give the same item in any worker, on any rank and after a resume. The reference draws
from Python's, numpy's and torch's global generators instead (and sets no seed at all).

Order in the reference `__getitem__`: waveform mixup -> fbank -> pad/crop -> frequency mask -> time mask ->
normalisation -> noise + time roll. Tensors are (T, F) = (frames, mel bins). The settings are
`ast_audio.train.recipes.AugmentConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _uniform(generator: torch.Generator) -> torch.Tensor:
    """One U[0, 1) float32 draw, shape (1,), like the reference's torch.rand(1)."""
    return torch.rand(1, generator=generator)


def sample_gamma(shape: float, generator: torch.Generator) -> float:
    """One Gamma(shape, 1) draw (Marsaglia & Tsang 2000), from `generator` only.

    torch.distributions cannot take a generator, hence this small sampler; it is exact (a rejection method).
    """
    if shape < 1.0:
        # Gamma(a) = Gamma(a + 1) * U^(1/a)  (Marsaglia & Tsang, section 6)
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        return sample_gamma(shape + 1.0, generator) * u ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn(1, generator=generator, dtype=torch.float64))
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        if u > 0 and math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def sample_beta(alpha: float, beta: float, generator: torch.Generator) -> float:
    """λ ~ Beta(alpha, beta) as X / (X + Y) with X ~ Gamma(alpha), Y ~ Gamma(beta)."""
    x = sample_gamma(alpha, generator)
    y = sample_gamma(beta, generator)
    return x / (x + y)


def remove_dc(waveform: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) minus its mean (the reference does this per clip before the fbank)."""
    return waveform - waveform.mean()


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """(M,) -> (length,): zero-pad at the end or keep the first `length` samples (the mixup partner, spec §2.2)."""
    if waveform.shape[0] >= length:
        return waveform[:length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.shape[0]))


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """Reference waveform mixup: DC-remove both, fit `second` to `first`'s length, λ·w1 + (1-λ)·w2, DC-remove.

    Args:
        first, second: (N,) and (M,) float waveforms at the same rate.
        lam: weight of `first`, in [0, 1].

    Returns:
        (N,) mixed waveform.
    """
    w1 = remove_dc(first)
    w2 = fit_length(remove_dc(second), w1.shape[0])
    return remove_dc(lam * w1 + (1.0 - lam) * w2)


def hard_targets(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """(C,) float32 with 1.0 at each target index (no label smoothing anywhere in AST)."""
    y = torch.zeros(num_classes, dtype=torch.float32)
    y[list(targets)] = 1.0
    return y


def mix_targets(first: Sequence[int], second: Sequence[int], lam: float, num_classes: int) -> torch.Tensor:
    """Reference mixup labels: λ at each of clip 1's classes plus (1-λ) at clip 2's; a class in both gets 1.0."""
    y = torch.zeros(num_classes, dtype=torch.float64)
    for c in set(first):
        y[c] += lam
    for c in set(second):
        y[c] += 1.0 - lam
    return y.float()


def mask_along_axis(spec: torch.Tensor, mask_param: int, axis: int, generator: torch.Generator,
                    value: float = 0.0) -> torch.Tensor:
    """One torchaudio-style mask on a (T, F) tensor along `axis` (0 = time, 1 = frequency); returns a new tensor.

    torchaudio's `mask_along_axis` (iid_masks=False): v = U1 * param, start = floor(U2 * (size - v)),
    end = start + floor(v), so the width floor(v) is in [0, param - 1] and the mask lies inside the axis
    whenever param <= size. A param below 1 is a no-op that draws nothing, as in torchaudio.
    """
    if mask_param < 1:
        return spec
    size = spec.shape[axis]
    v = _uniform(generator) * mask_param
    min_value = _uniform(generator) * (size - v)
    start = min_value.long()
    end = min_value.long() + v.long()
    positions = torch.arange(size)
    inside = (positions >= start) & (positions < end)  # (size,)
    inside = inside.unsqueeze(1) if axis == 0 else inside.unsqueeze(0)  # (T, 1) or (1, F)
    return spec.masked_fill(inside, value)


def spec_masks(spec: torch.Tensor, freqm: int, timem: int, generator: torch.Generator) -> torch.Tensor:
    """(T, F) -> (T, F): one frequency mask then one time mask, value 0, as the reference (before normalisation)."""
    spec = mask_along_axis(spec, freqm, axis=1, generator=generator)
    return mask_along_axis(spec, timem, axis=0, generator=generator)


def noise_and_roll(spec: torch.Tensor, generator: torch.Generator, max_amplitude: float = 0.1,
                   max_shift: int = 10) -> torch.Tensor:
    """Speech Commands "noise" (spec §2.4): x + rand(T, F) * U * 0.1, then roll along time by randint(-10, 10).

    The shift is in [-max_shift, max_shift - 1] frames (numpy's randint excludes the upper bound) and circular.
    """
    noise = torch.rand(spec.shape, generator=generator) * (_uniform(generator) * max_amplitude)  # (T, F)
    shift = int(torch.randint(-max_shift, max_shift, (1,), generator=generator))
    return torch.roll(spec + noise, shifts=shift, dims=0)
