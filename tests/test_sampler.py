"""Epoch sampler and balanced weights: hand-computed weights, torch's own samplers as references, DDP union."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DistributedSampler, WeightedRandomSampler

from ast_audio.errors import ConfigError
from ast_audio.train.layouts import Example, Manifest
from ast_audio.train.sampler import EpochSampler, balanced_weights


def _manifest(targets):
    names = ("a", "b", "c", "d")
    return Manifest(tuple(Example(f"/x/{i}.wav", t, f"{i}") for i, t in enumerate(targets)), names, names, True)


def test_balanced_weights_hand_computed():
    m = _manifest([(0,), (0, 1), (1,), (2,), (0, 2)])
    # counts: a 3, b 2, c 2, d 0; label weight 1000 / (count + 0.01), summed over each clip's labels (spec §3.1).
    wa, wb, wc = 1000 / 3.01, 1000 / 2.01, 1000 / 2.01
    expected = [wa, wa + wb, wb, wc, wa + wc]
    got = balanced_weights(m)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_weighted_frequencies_follow_weights():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    sampler = EpochSampler(4, weights=weights, num_samples=20000, seed=0)
    counts = np.bincount(list(sampler), minlength=4)
    expected = 20000 * weights.numpy() / weights.sum().item()
    assert stats.chisquare(counts, expected).pvalue > 1e-4


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n,world", [(10, 4), (12, 3), (5, 1)])
def test_equals_torch_distributed_sampler(shuffle, n, world):
    """Same seed-plus-epoch generator, permutation and padding rule as torch's DistributedSampler."""
    for epoch in (0, 3):
        for rank in range(world):
            ours = EpochSampler(n, shuffle=shuffle, seed=11, num_replicas=world, rank=rank)
            ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=11)
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_drop_last_equals_torch_distributed_sampler():
    for rank in range(4):
        ours = EpochSampler(10, seed=2, num_replicas=4, rank=rank, drop_last=True)
        ref = DistributedSampler(range(10), num_replicas=4, rank=rank, seed=2, drop_last=True)
        assert list(ours) == list(ref) and len(ours) == 2


def test_weighted_single_process_equals_weighted_random_sampler():
    weights = torch.rand(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = EpochSampler(30, weights=weights, seed=5)
    ours.set_epoch(2)
    ref = WeightedRandomSampler(weights, num_samples=30, replacement=True,
                                generator=torch.Generator().manual_seed(5 + 2))
    assert list(ours) == list(ref)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("world", [2, 4])
def test_union_of_rank_batches_is_the_single_process_batch(weighted, world):
    n, batch = 40, 8
    weights = torch.linspace(1, 5, n, dtype=torch.float64) if weighted else None
    single = list(EpochSampler(n, weights=weights, seed=3))
    per_rank = [list(EpochSampler(n, weights=weights, seed=3, num_replicas=world, rank=r)) for r in range(world)]
    b = batch // world
    for k in range(n // batch):
        union = sorted(i for r in range(world) for i in per_rank[r][k * b:(k + 1) * b])
        assert union == sorted(single[k * batch:(k + 1) * batch])


def test_every_example_once_per_epoch_over_ranks():
    per_rank = [list(EpochSampler(23, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    seen = per_rank[0] + per_rank[1]
    assert len(seen) == 24 and set(seen) == set(range(23))  # one example repeated as padding


def test_deterministic_by_seed_and_epoch_and_state_round_trip():
    a = EpochSampler(50, seed=1)
    b = EpochSampler(50, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(EpochSampler(50, seed=2)) != list(b)
    a.set_epoch(4)
    state = a.state_dict()
    c = EpochSampler(50, seed=0)
    c.load_state_dict(state)
    assert list(c) == list(a)
    with pytest.raises(ConfigError, match="num_examples"):
        EpochSampler(49).load_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        EpochSampler(0)
    with pytest.raises(ConfigError):
        EpochSampler(5, num_replicas=2, rank=2)
    with pytest.raises(ConfigError):
        EpochSampler(3, weights=torch.zeros(3))
    with pytest.raises(ConfigError):
        EpochSampler(3, weights=torch.ones(4))
