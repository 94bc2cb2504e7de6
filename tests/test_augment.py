"""Augmentation against its definitions (spec §2.2-2.4): mixup, torchaudio masks, Speech Commands noise + roll.

References here are written from the definitions in numpy/scipy, not taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import stats

from ast_audio import FeatureExtractor, FrontendConfig
from ast_audio.errors import ConfigError
from ast_audio.train.augment import (
    mask_along_axis,
    mix_targets,
    mix_waveforms,
    noise_and_roll,
    sample_beta,
    spec_masks,
)
from ast_audio.train.data import ClipDataset, collate
from ast_audio.train.layouts import Example, Manifest
from ast_audio.train.recipes import AugmentConfig
from fake_datasets import render

FRONTEND = FrontendConfig(target_length=100, mean=-5.0, std=4.0)  # 1 s clips give 98 frames, padded to 100


def _numpy_mix(w1: np.ndarray, w2: np.ndarray, lam: float) -> np.ndarray:
    """Spec §2.2 in numpy: DC-remove both, pad/truncate w2 to len(w1), λ w1 + (1-λ) w2, DC-remove."""
    w1 = w1.astype(np.float64) - w1.mean()
    w2 = w2.astype(np.float64) - w2.mean()
    w2 = np.pad(w2, (0, max(0, len(w1) - len(w2))))[: len(w1)]
    mix = lam * w1 + (1 - lam) * w2
    return mix - mix.mean()


@pytest.mark.parametrize("alpha", [10.0, 0.5])
def test_beta_sampler_matches_beta_distribution(alpha):
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_beta(alpha, alpha, g) for _ in range(3000)])
    assert ((draws > 0) & (draws < 1)).all()
    # Kolmogorov-Smirnov against scipy's Beta(alpha, alpha); p > 1e-3 (a correct sampler fails 1 run in 1000).
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("len2", [16000, 9000, 20000])
def test_mix_waveforms_equals_numpy_definition(len2):
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal(16000).astype(np.float32) * 0.3 + 0.2  # DC offsets on purpose
    w2 = rng.standard_normal(len2).astype(np.float32) * 0.3 - 0.1
    lam = 0.37
    got = mix_waveforms(torch.from_numpy(w1), torch.from_numpy(w2), lam).numpy()
    assert got.shape == (16000,)
    np.testing.assert_allclose(got, _numpy_mix(w1, w2, lam), atol=1e-6)  # float32 vs float64 rounding


def test_mix_targets_definition():
    lam = 0.3
    y = mix_targets((0, 2), (2, 3), lam, 5).numpy()
    expected = np.zeros(5)
    expected[[0, 2]] += lam
    expected[[2, 3]] += 1 - lam  # class 2 is in both: λ + (1 - λ) = 1.0
    np.testing.assert_allclose(y, expected, atol=1e-7)
    assert y[2] == pytest.approx(1.0, abs=1e-7)


def _one_class_per_clip(tmp_path, n=6, seconds=1.0):
    rng = np.random.default_rng(0)
    examples, waves = [], []
    for i in range(n):
        audio = render([i], seconds * (1 + 0.2 * i), 16000, rng)  # different lengths: partner pad/truncate paths
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), audio, 16000, subtype="FLOAT")
        examples.append(Example(str(path), (i,), f"c{i}.wav"))
        waves.append(audio)
    names = tuple(f"c{i}" for i in range(n))
    return Manifest(tuple(examples), names, names, multi_label=False), waves


def test_dataset_mixup_equals_numpy_mix_of_the_same_lambda(tmp_path):
    """Each clip is its own class, so the soft targets reveal λ and the partner; rebuild the input from them."""
    manifest, waves = _one_class_per_clip(tmp_path)
    ds = ClipDataset(manifest, FRONTEND, AugmentConfig(mixup=1.0), seed=3)
    extractor = FeatureExtractor(FRONTEND)
    mixed_with_other = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(manifest)):
            x, y, key = ds[i]
            assert key == f"c{i}.wav"
            y = y.numpy()
            assert y.sum() == pytest.approx(1.0, abs=1e-6)  # λ + (1 - λ)
            others = [c for c in np.flatnonzero(y) if c != i]
            if not others:  # partner was the clip itself: mixing with itself is the identity
                partner, lam = i, 1.0
            else:
                (partner,) = others
                lam = float(y[i])
                mixed_with_other += 1
            expected = extractor(torch.from_numpy(_numpy_mix(waves[i], waves[partner], lam)).float())[0]
            # float32 features of the same waveform computed twice; log-mel rounding only.
            torch.testing.assert_close(x, expected, atol=2e-4, rtol=0)
    assert mixed_with_other >= 10


def test_mixup_rate_and_uniform_partner(tmp_path):
    manifest, _ = _one_class_per_clip(tmp_path, n=4, seconds=0.2)
    ds = ClipDataset(manifest, FrontendConfig(target_length=20), AugmentConfig(mixup=0.5), seed=0)
    mixed, partners = 0, np.zeros(4)
    n = 0
    for epoch in range(60):
        ds.set_epoch(epoch)
        for i in range(4):
            y = ds[i][1].numpy()
            n += 1
            if y[i] < 1.0:
                mixed += 1
                partners[[c for c in np.flatnonzero(y) if c != i]] += 1
    # Mixing with itself looks unmixed: P(visible mix) = 0.5 * 3/4. Binomial(240, 0.375): 5-sigma bound.
    p = 0.5 * 0.75
    assert abs(mixed - n * p) < 5 * np.sqrt(n * p * (1 - p))
    # Visible partners are uniform over the other 3 clips of each item, so uniform over clips overall.
    assert stats.chisquare(partners).pvalue > 1e-4


def _reference_mask(size: int, param: int, u1: float, u2: float) -> np.ndarray:
    """torchaudio.functional.mask_along_axis (iid_masks=False) written out: True where masked."""
    value = np.float32(u1) * np.float32(param)
    min_value = np.float32(u2) * (np.float32(size) - value)
    start = int(min_value)
    end = int(min_value) + int(value)
    return (np.arange(size) >= start) & (np.arange(size) < end)


@pytest.mark.parametrize("axis,param", [(1, 48), (0, 30), (0, 150)])
def test_mask_equals_torchaudio_definition(axis, param):
    spec = torch.randn(100, 64, generator=torch.Generator().manual_seed(0))
    size = spec.shape[axis]
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        got = mask_along_axis(spec, param, axis, g)
        replay = torch.Generator().manual_seed(seed)
        u1, u2 = float(torch.rand(1, generator=replay)), float(torch.rand(1, generator=replay))
        masked = _reference_mask(size, param, u1, u2)
        expected = spec.numpy().copy()
        if axis == 0:
            expected[masked, :] = 0.0
        else:
            expected[:, masked] = 0.0
        np.testing.assert_array_equal(got.numpy(), expected)


def test_mask_width_and_start_statistics():
    """Over many draws: width = floor(U * param) covers 0..param-1 uniformly; masks stay inside the axis."""
    param, size, draws = 20, 64, 4000
    g = torch.Generator().manual_seed(1)
    widths, starts = [], []
    for _ in range(draws):
        out = mask_along_axis(torch.ones(10, size), param, axis=1, generator=g)
        zero_cols = np.flatnonzero((out == 0).all(dim=0).numpy())
        widths.append(len(zero_cols))
        if len(zero_cols):
            assert (np.diff(zero_cols) == 1).all()  # one contiguous mask
            starts.append(zero_cols[0])
            assert zero_cols[-1] < size
    widths = np.array(widths)
    assert widths.min() == 0 and widths.max() == param - 1
    counts = np.bincount(widths, minlength=param)
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform over 0..param-1
    assert min(starts) == 0 and max(starts) >= size - param  # starts span the allowed range


def test_zero_param_is_a_no_op_that_draws_nothing():
    g = torch.Generator().manual_seed(5)
    spec = torch.randn(10, 8)
    assert torch.equal(mask_along_axis(spec, 0, 0, g), spec)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_spec_masks_frequency_then_time():
    spec = torch.ones(50, 40)
    g = torch.Generator().manual_seed(7)
    got = spec_masks(spec, 30, 25, g)
    replay = torch.Generator().manual_seed(7)
    u = [float(torch.rand(1, generator=replay)) for _ in range(4)]
    freq = _reference_mask(40, 30, u[0], u[1])
    time = _reference_mask(50, 25, u[2], u[3])
    expected = np.ones((50, 40), dtype=np.float32)
    expected[:, freq] = 0
    expected[time, :] = 0
    np.testing.assert_array_equal(got.numpy(), expected)


def test_noise_amplitude_and_roll_range():
    T, F = 40, 8
    ramp = torch.arange(T, dtype=torch.float32).unsqueeze(1).expand(T, F)  # row t holds t
    g = torch.Generator().manual_seed(2)
    shifts, peaks = [], []
    for _ in range(2000):
        out = noise_and_roll(ramp, g)
        shift = int((out[0, 0].floor() * -1) % T)  # row 0 now holds the value of row -shift
        shift = shift - T if shift >= T // 2 else shift
        noise = out - torch.roll(ramp, shift, dims=0)
        assert noise.min() >= 0 and noise.max() < 0.1  # rand * U / 10 is in [0, 0.1)
        shifts.append(shift)
        peaks.append(float(noise.max()))
    assert set(shifts) == set(range(-10, 10))  # numpy randint(-10, 10): -10..9
    assert min(peaks) < 0.01 and max(peaks) > 0.09  # the amplitude U / 10 is itself random in [0, 0.1)


def test_dataset_masks_before_normalisation_and_noise_after(tmp_path):
    manifest, _ = _one_class_per_clip(tmp_path, n=2)
    base = ClipDataset(manifest, FRONTEND)
    masked = ClipDataset(manifest, FRONTEND, AugmentConfig(freqm=40, timem=30), seed=1)
    noisy = ClipDataset(manifest, FRONTEND, AugmentConfig(noise=True), seed=1)
    zero_after_norm = (0.0 - FRONTEND.mean) / (2 * FRONTEND.std)
    for i in range(2):
        ref = base[i][0]
        got = masked[i][0]
        changed = got != ref
        assert changed.any()
        # Masked cells hold log-mel 0 normalised, i.e. the mask was applied before normalisation.
        torch.testing.assert_close(got[changed], torch.full_like(got[changed], zero_after_norm), atol=1e-6, rtol=0)
        out = noisy[i][0]
        fits = [s for s in range(-10, 10) if ((out - torch.roll(ref, s, 0)) >= -1e-6).all()
                and ((out - torch.roll(ref, s, 0)) < 0.1 + 1e-6).all()]
        assert len(fits) == 1  # exactly one roll explains the output as normalised input + noise in [0, 0.1)


def test_same_seed_epoch_index_same_item_and_workers_agree(tmp_path):
    manifest, _ = _one_class_per_clip(tmp_path, n=4, seconds=0.3)
    aug = AugmentConfig(mixup=0.5, freqm=20, timem=10, noise=True)
    front = FrontendConfig(target_length=40)
    a, b = ClipDataset(manifest, front, aug, seed=9), ClipDataset(manifest, front, aug, seed=9)
    b.set_epoch(1)
    b.set_epoch(0)  # going back to epoch 0 (a resume) gives epoch 0's items again
    for i in range(4):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    b.set_epoch(1)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(4))
    loader = torch.utils.data.DataLoader(a, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    x = torch.cat([batch.x for batch in batches])
    assert torch.equal(x, torch.stack([a[i][0] for i in range(4)]))


def test_augment_config_validation():
    with pytest.raises(ConfigError, match="mixup"):
        AugmentConfig(mixup=1.5)
    with pytest.raises(ConfigError, match="freqm"):
        AugmentConfig(freqm=-1)
    with pytest.raises(ConfigError, match="mixup_alpha"):
        AugmentConfig(mixup_alpha=0)
