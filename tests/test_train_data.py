"""Data layouts, ClipDataset features and bad-clip handling on tiny generated data sets in the real layouts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from ast_audio import FeatureExtractor, FrontendConfig
from ast_audio.errors import ConfigError
from ast_audio.train.data import BadClip, ClipDataset, collate
from ast_audio.train.layouts import SPEECHCOMMANDS_WORDS, Example, Manifest, load_splits
from ast_audio.train.recipes import AugmentConfig
from fake_datasets import LABELS_DIR, make_audioset, make_esc50, make_folder, make_speechcommands, render

FRONT = FrontendConfig(target_length=100)


# ------------------------------------------------------------------------------------------------ layouts


def test_esc50_layout(tmp_path):
    root = make_esc50(tmp_path / "esc", classes=3, clips_per_class_per_fold=2)
    for fold in (1, 5):
        splits = load_splits("esc50", root, fold=fold)
        assert len(splits.train) == 4 * 3 * 2 and len(splits.valid) == 3 * 2 and splits.test is None
        assert splits.train.labels == ("dog", "rooster", "pig")
        assert splits.train.mids == ("/m/07rwj00", "/m/07rwj01", "/m/07rwj02")
        assert not splits.train.multi_label
        assert all(e.key.startswith(f"{fold}-") for e in splits.valid.examples)
        assert not any(e.key.startswith(f"{fold}-") for e in splits.train.examples)
        for e in splits.train.examples:  # target = the last field of the ESC-50 file name
            assert e.targets == (int(e.key.rsplit("-", 1)[1].split(".")[0]),) and Path(e.source).is_absolute()


def test_esc50_real_label_csv_order_matches():
    """The fake categories are the reference's ESC-50 class order (the real label CSV)."""
    with (LABELS_DIR / "esc50_class_labels_indices.csv").open() as f:
        names = [row["display_name"] for row in csv.DictReader(f)]
    from fake_datasets import ESC50_CATEGORIES

    assert tuple(names) == ESC50_CATEGORIES


def test_speechcommands_layout(tmp_path):
    root = make_speechcommands(tmp_path / "sc", words=("yes", "no", "up"), clips_per_word=6)
    splits = load_splits("speechcommands", root)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (12, 3, 3)
    # The reference order (real label CSV), restricted to the words present.
    with (LABELS_DIR / "speechcommands_class_labels_indices.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(r["display_name"] for r in rows) == SPEECHCOMMANDS_WORDS
    order = [r["display_name"] for r in rows if r["display_name"] in ("yes", "no", "up")]
    assert splits.train.labels == tuple(order) == ("no", "yes", "up")
    assert splits.train.mids == tuple(r["mid"] for r in rows if r["display_name"] in order)
    valid_keys = (root / "validation_list.txt").read_text().split()
    assert [e.key for e in splits.valid.examples] == valid_keys
    for split in (splits.train, splits.valid, splits.test):
        for e in split.examples:
            assert splits.train.labels[e.targets[0]] == e.key.split("/")[0]
            assert "_background_noise_" not in e.source
    assert not {e.key for e in splits.train.examples} & set(valid_keys)


def test_audioset_layout(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path / "as", classes=5, train_clips=12, eval_clips=4)
    splits = load_splits("audioset", train_json, eval_data=str(eval_json), label_csv=str(label_csv))
    assert (len(splits.train), len(splits.valid), splits.test) == (12, 4, None)
    assert splits.train.multi_label and splits.train.labels[0] == "Speech" and splits.train.mids[0] == "/m/09x0r"
    entries = json.loads(train_json.read_text().split("\n", 1)[1])["data"]  # skip the '#' comment line
    mids = splits.train.mids
    for e, entry in zip(splits.train.examples, entries, strict=True):
        assert e.targets == tuple(mids.index(m) for m in entry["labels"].split(","))
        assert e.source == str((train_json.parent / entry["wav"]).resolve())
    assert any(len(e.targets) == 2 for e in splits.train.examples)


def test_folder_layouts(tmp_path):
    root = make_folder(tmp_path / "f", classes=("tone", "chirp", "noise"), clips_per_class=5)
    splits = load_splits("folder", root, holdout=0.2, seed=0)
    assert splits.train.labels == ("chirp", "noise", "tone") and not splits.train.multi_label
    assert (len(splits.train), len(splits.valid), splits.test) == (12, 3, None)  # 1 of 5 per class held out
    for split in (splits.train, splits.valid):
        assert sorted(np.bincount([e.targets[0] for e in split.examples])) == ([4, 4, 4] if split is splits.train
                                                                             else [1, 1, 1])
    again = load_splits("folder", root, holdout=0.2, seed=0)
    assert again.valid.examples == splits.valid.examples
    assert load_splits("folder", root, holdout=0.2, seed=1).valid.examples != splits.valid.examples

    # Explicit train/valid/test folders.
    explicit = tmp_path / "explicit"
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        make_folder(explicit / split, classes=("a", "b"), clips_per_class=n, seed=n)
    s = load_splits("folder", explicit)
    assert (len(s.train), len(s.valid), len(s.test)) == (6, 4, 2)

    # A CSV manifest with multi-label rows, and a JSON manifest.
    rows = [(f"f/tone/tone_00{i}.wav", "tone;noise" if i == 0 else "tone") for i in range(4)]
    rows += [(f"f/chirp/chirp_00{i}.wav", "chirp") for i in range(4)]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    s = load_splits("folder", tmp_path / "m.csv", holdout=0.25)
    assert s.train.multi_label and s.train.labels == ("chirp", "noise", "tone")
    assert len(s.train) + len(s.valid) == 8 and len(s.valid) == 2
    data = {"data": [{"wav": p, "labels": lab.replace(";", ",")} for p, lab in rows]}
    (tmp_path / "m.json").write_text(json.dumps(data))
    s_json = load_splits("folder", tmp_path / "m.json", holdout=0.25)
    assert s_json.train.examples == s.train.examples and s_json.valid.examples == s.valid.examples


# ------------------------------------------------------------------------------------------------ bad input


def _error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_file_in_json(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path, classes=3, train_clips=4, eval_clips=2)
    missing = tmp_path / "audio" / "train" / "train_0002.wav"
    missing.unlink()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("audioset", train_json, eval_data=str(eval_json), label_csv=str(label_csv))
    assert str(missing) in _error(excinfo) and str(train_json) in _error(excinfo)


def test_unknown_mid(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path, classes=3, train_clips=4, eval_clips=2)
    data = json.loads(eval_json.read_text())
    data["data"][1]["labels"] = "/m/not_a_mid"
    eval_json.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as excinfo:
        load_splits("audioset", train_json, eval_data=str(eval_json), label_csv=str(label_csv))
    assert str(eval_json) in _error(excinfo) and "/m/not_a_mid" in _error(excinfo)


def test_audioset_needs_label_csv_and_eval(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path, classes=2, train_clips=2, eval_clips=2)
    with pytest.raises(ConfigError, match="label-csv"):
        load_splits("audioset", train_json, eval_data=str(eval_json))
    with pytest.raises(ConfigError, match="eval-data"):
        load_splits("audioset", train_json, label_csv=str(label_csv))
    with pytest.raises(ConfigError) as excinfo:
        load_splits("audioset", train_json, eval_data=str(eval_json), label_csv=str(tmp_path / "nope.csv"))
    assert str(tmp_path / "nope.csv") in _error(excinfo)


def test_esc50_bad_fold_and_missing_meta(tmp_path):
    root = make_esc50(tmp_path / "esc", classes=2, clips_per_class_per_fold=1, seconds=0.1)
    for fold in (0, 6, None):
        with pytest.raises(ConfigError) as excinfo:
            load_splits("esc50", root, fold=fold)
        assert str(root / "meta" / "esc50.csv") in _error(excinfo) and "fold" in _error(excinfo)
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("esc50", root, fold=1)
    assert str(root / "meta" / "esc50.csv") in _error(excinfo)


def test_esc50_missing_audio(tmp_path):
    root = make_esc50(tmp_path / "esc", classes=2, clips_per_class_per_fold=1, seconds=0.1)
    victim = sorted((root / "audio").iterdir())[0]
    victim.unlink()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("esc50", root, fold=1)
    assert str(victim) in _error(excinfo)


def test_speechcommands_bad_inputs(tmp_path):
    root = make_speechcommands(tmp_path / "sc", words=("yes", "no"), clips_per_word=6, seconds=0.1)
    (root / "banana").mkdir()
    shutil.copy(next((root / "yes").iterdir()), root / "banana" / "x.wav")
    with pytest.raises(ConfigError) as excinfo:
        load_splits("speechcommands", root)
    assert "banana" in _error(excinfo) and str(root) in _error(excinfo)
    shutil.rmtree(root / "banana")
    (root / "testing_list.txt").unlink()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("speechcommands", root)
    assert str(root / "testing_list.txt") in _error(excinfo)


def test_folder_bad_inputs(tmp_path):
    root = make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=3, seconds=0.1)
    (root / "empty_class").mkdir()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("folder", root)
    assert str(root / "empty_class") in _error(excinfo)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ConfigError) as excinfo:
        load_splits("folder", empty)
    assert str(empty) in _error(excinfo)
    with pytest.raises(ConfigError) as excinfo:
        load_splits("folder", tmp_path / "absent")
    assert str(tmp_path / "absent") in _error(excinfo)
    # A CSV label that is not in the given label CSV.
    (tmp_path / "labels.csv").write_text('index,mid,display_name\n0,/m/a,"a"\n')
    (tmp_path / "m.csv").write_text("f/a/a_000.wav,a\nf/b/b_000.wav,b\nf/a/a_001.wav,a\n")
    with pytest.raises(ConfigError) as excinfo:
        load_splits("folder", tmp_path / "m.csv", label_csv=str(tmp_path / "labels.csv"))
    assert str(tmp_path / "labels.csv") in _error(excinfo) and "'b'" in _error(excinfo)
    with pytest.raises(ConfigError, match="unknown data layout"):
        load_splits("kaggle", root)


# ------------------------------------------------------------------------------------------------ dataset


def test_clip_dataset_equals_feature_extractor(tmp_path):
    """augment=None: the features equal the public front end on the same file, decoded and resampled here."""
    root = make_esc50(tmp_path / "esc", classes=2, clips_per_class_per_fold=1)  # 44.1 kHz originals
    splits = load_splits("esc50", root, fold=1)
    ds = ClipDataset(splits.train, FRONT)
    extractor = FeatureExtractor(FRONT)
    for i in range(3):
        x, y, key = ds[i]
        example = splits.train.examples[i]
        data, rate = sf.read(example.source, dtype="float32")
        assert rate == 44100
        wave = soxr.resample(data, rate, 16000, quality="HQ")
        expected = extractor(torch.from_numpy(np.ascontiguousarray(wave)))[0]
        assert x.shape == (100, 128) and x.dtype == torch.float32
        # The dataset removes the clip mean once more before the fbank: float32 rounding in the weakest bins only.
        torch.testing.assert_close(x, expected, atol=5e-5, rtol=0)
        assert torch.equal(y, torch.nn.functional.one_hot(torch.tensor(example.targets[0]), 2).float())
        assert key == example.key


def test_unnormalised_dataset(tmp_path):
    root = make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=2, seconds=0.5)
    manifest = load_splits("folder", root, holdout=0.5).train
    raw = ClipDataset(manifest, FRONT, normalize=False)[0][0]
    norm = ClipDataset(manifest, FRONT)[0][0]
    torch.testing.assert_close(norm, (raw - FRONT.mean) / (2 * FRONT.std), atol=1e-5, rtol=0)
    assert (raw[50:] == 0).all()  # 0.5 s = 48 frames, zero-padded to 100 in the log-mel domain


def _bad_manifest(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(str(good), render([0], 0.5, 16000, np.random.default_rng(0)), 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(good.read_bytes()[:30])  # truncated header
    missing = tmp_path / "missing.wav"
    paths = [good, empty, corrupt, missing]
    examples = tuple(Example(str(p), (i % 2,), p.name) for i, p in enumerate(paths))
    return Manifest(examples, ("x", "y"), ("x", "y"), False), paths


def test_bad_clips_are_reported_and_dropped(tmp_path):
    manifest, paths = _bad_manifest(tmp_path)
    ds = ClipDataset(manifest, FRONT, AugmentConfig(freqm=10))
    items = [ds[i] for i in range(4)]
    assert not isinstance(items[0], BadClip)
    for item, path in zip(items[1:], paths[1:], strict=True):
        assert isinstance(item, BadClip) and item.key == path.name
        assert str(path) in item.error and "\n" not in item.error
    batch = collate(items)
    assert batch.x.shape == (1, 100, 128) and batch.y.shape == (1, 2) and batch.keys == ["good.wav"]
    assert [b.key for b in batch.bad] == ["empty.wav", "corrupt.wav", "missing.wav"]
    empty = collate(items[1:])
    assert len(empty) == 0 and empty.x.shape[0] == 0 and len(empty.bad) == 3


def test_bad_mixup_partner_falls_back_to_no_mixup(tmp_path):
    manifest, _ = _bad_manifest(tmp_path)
    manifest = manifest.subset([0, 3])  # good clip and a missing one
    ds = ClipDataset(manifest, FRONT, AugmentConfig(mixup=1.0), seed=0)
    base = ClipDataset(manifest, FRONT)[0]
    unmixed = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        x, y, _ = ds[0]
        assert torch.equal(y, torch.tensor([1.0, 0.0]))  # the partner is itself or the bad clip: hard label
        torch.testing.assert_close(x, base[0], atol=1e-4, rtol=0)  # never mixed with a constant or another clip
        unmixed += 1
    assert ds.mixup_fallbacks >= 1 and unmixed == 12
