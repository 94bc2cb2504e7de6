"""Tar shards: prepare then stream gives ClipDataset's clips, split over ranks and DataLoader workers exactly once."""

from __future__ import annotations

import json
import tarfile
from collections import Counter

import pytest
import torch

from ast_audio import FrontendConfig
from ast_audio.errors import ConfigError
from ast_audio.train.data import BadClip, ClipDataset, collate
from ast_audio.train.layouts import Example, Manifest, load_splits
from ast_audio.train.recipes import AugmentConfig
from ast_audio.train.shards import ShardDataset, is_shard_folder, prepare_shards, read_index
from fake_datasets import make_esc50, make_folder

FRONT = FrontendConfig(target_length=60)


@pytest.fixture(scope="module")
def folder_manifest(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("data") / "f", classes=("tone", "chirp"), clips_per_class=8,
                       seconds=0.5)
    return load_splits("folder", root, holdout=0.25).train  # 12 clips, 16 kHz PCM_16


def _by_key(items):
    out = {}
    for item in items:
        assert not isinstance(item, BadClip), item
        assert item[2] not in out, f"{item[2]} yielded twice"
        out[item[2]] = item
    return out


def test_prepare_and_stream_equals_clip_dataset(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "shards", shard_size=5)
    assert is_shard_folder(out) and not is_shard_folder(tmp_path)
    index = read_index(out)
    assert [s["count"] for s in index["shards"]] == [5, 5, 2] and index["clips"] == 12
    assert index["labels"] == list(folder_manifest.labels) and index["skipped"] == []
    streamed = _by_key(ShardDataset(out, FRONT, shuffle=False))
    reference = ClipDataset(folder_manifest, FRONT)
    assert set(streamed) == {e.key for e in folder_manifest.examples}
    for i, example in enumerate(folder_manifest.examples):
        x, y, _ = reference[i]
        # 16-bit sources stored as 24-bit FLAC are bit-exact: identical decoding, identical features.
        torch.testing.assert_close(streamed[example.key][0], x, atol=1e-5, rtol=0)
        assert torch.equal(streamed[example.key][1], y)


def test_resampled_esc50_shards(tmp_path):
    root = make_esc50(tmp_path / "esc", classes=2, clips_per_class_per_fold=1, seconds=0.5)  # 44.1 kHz
    manifest = load_splits("esc50", root, fold=1).train
    reference = ClipDataset(manifest, FRONT)
    expected = {e.key: reference[i][0] for i, e in enumerate(manifest.examples)}
    wav = _by_key(ShardDataset(prepare_shards(manifest, tmp_path / "w", audio_format="wav"), FRONT, shuffle=False))
    flac = _by_key(ShardDataset(prepare_shards(manifest, tmp_path / "f"), FRONT, shuffle=False))
    for key, x in expected.items():
        torch.testing.assert_close(wav[key][0], x, atol=1e-5, rtol=0)  # float32 WAV: the same resampled samples
        # 24-bit FLAC quantises the resampled float samples (step 1.2e-7); the log-mel of the weakest bins moves
        # by up to ~1e-4 after normalisation.
        torch.testing.assert_close(flac[key][0], x, atol=3e-4, rtol=0)


def test_augmented_items_equal_clip_dataset_items(folder_manifest, tmp_path):
    """Without mixup, an item's randomness depends on (seed, epoch, clip index) only, as in ClipDataset."""
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=4, audio_format="wav")
    aug = AugmentConfig(freqm=20, timem=15, noise=True)
    stream = ShardDataset(out, FRONT, aug, seed=4, buffer_size=3)
    reference = ClipDataset(folder_manifest, FRONT, aug, seed=4)
    for epoch in (0, 2):
        stream.set_epoch(epoch)
        reference.set_epoch(epoch)
        got = _by_key(stream)
        for i, example in enumerate(folder_manifest.examples):
            torch.testing.assert_close(got[example.key][0], reference[i][0], atol=1e-5, rtol=0)


def _run(out, rank, world, workers, epoch=0, **kwargs):
    ds = ShardDataset(out, FRONT, rank=rank, world_size=world, **kwargs)
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    keys = [k for batch in loader for k in batch.keys]
    return keys, len(ds)


def test_two_ranks_two_workers_cover_every_clip_once(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=3)  # 4 equal shards
    all_keys = {e.key for e in folder_manifest.examples}
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            ds_keys, length = _run(out, rank, 2, 2, epoch=epoch)
            assert len(ds_keys) == length == 6
            seen += ds_keys
        counts = Counter(seen)
        assert set(counts) == all_keys and set(counts.values()) == {1}
        orders.append(seen)
    assert orders[0] != orders[1]  # shard order and shuffle buffer are seeded by the epoch
    # Fewer shards than ranks x workers: the split falls back to every n-th clip, still exactly once.
    one = prepare_shards(folder_manifest, tmp_path / "one", shard_size=100)
    seen = [k for rank in range(2) for k in _run(one, rank, 2, 2, equalize=False)[0]]
    assert Counter(seen) == Counter(all_keys)


def test_uneven_shards_give_equal_rank_counts(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=5)  # 5, 5, 2: rank 0 has 7, rank 1 has 5
    per_rank = [_run(out, rank, 2, 2) for rank in range(2)]
    assert [len(keys) for keys, _ in per_rank] == [5, 5] and [n for _, n in per_rank] == [5, 5]
    seen = per_rank[0][0] + per_rank[1][0]
    assert len(set(seen)) == len(seen) == 10  # 2 clips dropped (they change with the epoch), none repeated
    unequal = [_run(out, rank, 2, 0, equalize=False)[0] for rank in range(2)]
    assert sorted(len(k) for k in unequal) == [5, 7]


def test_equal_batches_per_rank_and_short_workers_repeat(folder_manifest, tmp_path):
    """DDP needs the same number of steps on every rank: equal per-worker shares give equal batch counts."""
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=5)  # 5, 5, 2
    for rank in range(2):
        ds = ShardDataset(out, FRONT, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
        batches = list(loader)
        # shares 3 + 2 per rank -> ceil(3/2) + ceil(2/2) = 3 batches on both ranks
        assert len(batches) == ds.batches_per_epoch(2, num_workers=2) == 3
    # One rank, 2 workers: worker 0 reads shards 0 and 2 (7 clips) for a share of 6, worker 1 shard 1 (5 clips)
    # for a share of 6, so it repeats one clip: 12 clips yielded, 11 distinct.
    keys, length = _run(out, 0, 1, 2)
    assert len(keys) == length == 12 and len(set(keys)) == 11


def test_shuffle_is_seeded_by_epoch(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=4)
    ds = ShardDataset(out, FRONT, buffer_size=4, seed=1)
    first = [item[2] for item in ds]
    assert [item[2] for item in ds] == first
    ds.set_epoch(1)
    second = [item[2] for item in ds]
    assert second != first and sorted(second) == sorted(first)


def test_prepare_skips_bad_clips_and_reports_them(folder_manifest, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    examples = folder_manifest.examples[:3] + (Example(str(empty), (0,), "empty.wav"),)
    manifest = Manifest(examples, folder_manifest.labels, folder_manifest.mids, False)
    out = prepare_shards(manifest, tmp_path / "s")
    index = read_index(out)
    assert index["clips"] == 3 and index["source_clips"] == 4
    assert index["skipped"][0]["key"] == "empty.wav" and str(empty) in index["skipped"][0]["error"]
    with pytest.raises(ConfigError, match="already exists"):
        prepare_shards(manifest, out)
    assert prepare_shards(manifest, out, force=True) == out


def test_damaged_shards(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=6)
    shard = out / "shard-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated mid-way
    items = list(ShardDataset(out, FRONT, shuffle=False))
    bad = [item for item in items if isinstance(item, BadClip)]
    assert len(items) == 12 and 1 <= len(bad) <= 6  # the quota is kept; lost clips are reported, not replaced
    assert all(str(out) in b.error for b in bad)
    shard.unlink()
    with pytest.raises(ConfigError) as excinfo:
        ShardDataset(out, FRONT)
    assert str(shard) in str(excinfo.value)
    with pytest.raises(ConfigError, match="not a shard folder"):
        ShardDataset(tmp_path, FRONT)


def test_shard_members_are_webdataset_style(folder_manifest, tmp_path):
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=12)
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names[:2] == ["000000000.flac", "000000000.json"]
    first = folder_manifest.examples[0]
    assert meta["key"] == first.key and meta["targets"] == list(first.targets)


def _dist_worker(rank: int, world: int, folder: str, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = ShardDataset(folder, FRONT)  # rank and world from torch.distributed
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
        keys = [k for batch in loader for k in batch.keys]
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"keys": keys, "len": len(ds), "world": list(ds.world())}, f)
    finally:
        torch.distributed.destroy_process_group()


def test_rank_and_world_from_torch_distributed(folder_manifest, tmp_path):
    """Two real gloo processes, two DataLoader workers each: every clip exactly once."""
    out = prepare_shards(folder_manifest, tmp_path / "s", shard_size=3)
    torch.multiprocessing.start_processes(_dist_worker, args=(2, str(out), str(tmp_path / "init"), str(tmp_path)),
                                          nprocs=2, start_method="fork")  # fork: no re-import of torch
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in results] == [[0, 2], [1, 2]] and [r["len"] for r in results] == [6, 6]
    seen = results[0]["keys"] + results[1]["keys"]
    assert Counter(seen) == Counter(e.key for e in folder_manifest.examples)


def test_parallel_prepare_writes_the_same_shards(folder_manifest, tmp_path):
    serial = prepare_shards(folder_manifest, tmp_path / "a", shard_size=5)
    parallel = prepare_shards(folder_manifest, tmp_path / "b", shard_size=5, num_workers=2)
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (serial / name).read_bytes() == (parallel / name).read_bytes()  # mtime 0: byte-identical tars
