"""Balanced (weighted, with replacement) sampling over tar shards: clips read by offset (`ShardClips`) and drawn by
the in-memory recipe's `EpochSampler` with the same weights.

The label-frequency test draws three epochs through 2 ranks x 2 DataLoader workers from a generated shard set whose
classes are very unequal (100, 50, 25, 15, 10 clips), and compares the drawn labels with the in-memory sampler's
distribution by a chi-square goodness-of-fit test at alpha = 0.001 (a fixed seed: the outcome is deterministic).
The same test rejects the unweighted shuffle's draws, so it has the power to see a sampler that ignores the weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.stats import chi2

from ast_audio import FrontendConfig
from ast_audio.train.data import ClipDataset, collate
from ast_audio.train.layouts import Example, Manifest
from ast_audio.train.sampler import EpochSampler, balanced_weights, balanced_weights_from_targets
from ast_audio.train.shards import ShardClips, prepare_shards

SIZES = (100, 50, 25, 15, 10)
FRONT = FrontendConfig(target_length=8)
ALPHA = 0.001


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("balanced")
    rng = np.random.default_rng(0)
    examples = []
    for c, size in enumerate(SIZES):
        for j in range(size):
            path = root / f"c{c}_{j:03d}.wav"
            sf.write(str(path), (0.1 * rng.standard_normal(800)).astype(np.float32), 16000, subtype="PCM_16")
            examples.append(Example(str(path), (c,), f"c{c}_{j:03d}"))
    rng.shuffle(examples)  # classes interleaved over the shards
    labels = tuple(f"class{c}" for c in range(len(SIZES)))
    manifest = Manifest(tuple(examples), labels, labels, True)
    return manifest, prepare_shards(manifest, root / "shards", shard_size=37, audio_format="wav")


def _keys(clips: ShardClips, sampler: EpochSampler, workers: int = 2) -> list[str]:
    loader = torch.utils.data.DataLoader(clips, batch_size=16, sampler=sampler, num_workers=workers,
                                         collate_fn=collate)
    return [key for batch in loader for key in batch.keys]


def test_clips_read_by_offset_equal_the_files(shard_set):
    manifest, folder = shard_set
    clips = ShardClips(folder, FRONT)
    files = ClipDataset(manifest, FRONT)
    assert len(clips) == len(manifest)
    for i in (0, 57, len(clips) - 1):
        x, y, key = clips[i]
        j = int(clips.table["index"][i])
        fx, fy, fkey = files[j]
        assert key == fkey and torch.equal(y, fy)
        assert torch.allclose(x, fx, atol=1e-5)  # PCM_16 stored as 16-bit WAV: the same samples
    weights = balanced_weights_from_targets(clips.all_targets(), clips.num_classes)
    order = clips.table["index"]  # the table lists clips in prepare order, the manifest's
    assert torch.equal(weights, balanced_weights(manifest)[torch.as_tensor(order)])


def test_drawn_label_frequencies_match_the_in_memory_sampler(shard_set):
    manifest, folder = shard_set
    clips = ShardClips(folder, FRONT)
    weights = balanced_weights_from_targets(clips.all_targets(), clips.num_classes)
    label_of = {clips.key(i): clips.targets(i)[0] for i in range(len(clips))}
    # The in-memory sampler's label distribution: P(class c) = sum of the weights of the clips of c / total weight.
    memory = balanced_weights(manifest)
    expected = np.array([float(memory[[c in e.targets for e in manifest.examples]].sum()) for c in range(len(SIZES))])
    expected /= expected.sum()

    counts = np.zeros(len(SIZES))
    for epoch in (1, 2, 3):
        samplers = [EpochSampler(len(clips), weights=weights, seed=11, num_replicas=2, rank=r) for r in (0, 1)]
        streams = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            streams.append(_keys(clips, sampler))
        order = [clips.key(i) for i in samplers[0].global_order().tolist()]
        # Disjoint streams that together are the epoch's global draw: rank r has positions r, r + 2, ...
        assert streams[0] == order[0::2] and streams[1] == order[1::2]
        for key in order:
            counts[label_of[key]] += 1
    statistic = float((((counts - counts.sum() * expected) ** 2) / (counts.sum() * expected)).sum())
    critical = float(chi2.ppf(1 - ALPHA, df=len(SIZES) - 1))
    print(f"chi-square {statistic:.2f} (critical {critical:.2f} at alpha {ALPHA}); counts {counts.tolist()}")
    assert statistic < critical

    # Power: the unweighted shuffle's draws (class shares 0.5, 0.25, ...) fail the same test.
    plain = EpochSampler(len(clips), seed=11)
    uniform = np.zeros(len(SIZES))
    for i in plain:
        uniform[clips.targets(i)[0]] += 3  # three epochs' worth
    assert float((((uniform - uniform.sum() * expected) ** 2) / (uniform.sum() * expected)).sum()) > critical


def test_draws_are_deterministic_and_resume_mid_run(shard_set):
    _, folder = shard_set
    clips = ShardClips(folder, FRONT)
    weights = balanced_weights_from_targets(clips.all_targets(), clips.num_classes)
    first = EpochSampler(len(clips), weights=weights, seed=3, num_replicas=2, rank=1)
    first.set_epoch(2)
    state = first.state_dict()  # what a checkpoint after epoch 2 stores
    first.set_epoch(3)
    expected = _keys(clips, first, workers=0)
    resumed = EpochSampler(len(clips), weights=weights, seed=3, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)
    assert _keys(ShardClips(folder, FRONT), resumed, workers=2) == expected
    other = EpochSampler(len(clips), weights=weights, seed=4, num_replicas=2, rank=1)
    other.set_epoch(3)
    assert _keys(clips, other, workers=0) != expected


def test_shards_without_a_clip_table_are_refused_with_the_fix(shard_set, tmp_path):
    import shutil

    from ast_audio.errors import ConfigError

    old = shutil.copytree(shard_set[1], tmp_path / "old")
    (old / "clips.npz").unlink()  # a folder prepared before the table existed
    with pytest.raises(ConfigError, match="re-create the shards with `ast-audio prepare`"):
        ShardClips(old, FRONT)
