"""SED training data (`ast_audio.train.sed`, issue 20 part 2): frame targets from TSV rows counted by hand (events
crossing crop edges, overlapping labels, background files), weak clips masked, mixup of targets, the folder layout
and its validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.config import ASTConfig, FrontendConfig
from ast_audio.errors import ConfigError
from ast_audio.train.recipes import AugmentConfig
from ast_audio.train.sed import (
    SedClip,
    SedDataset,
    balanced_sed_weights,
    column_spans,
    crop_events,
    epoch_items,
    frame_targets,
    load_sed_folder,
    sed_collate,
)

# A tiny model: 128 frames -> 12 time columns of 0.1 s (tstride 10 x 10 ms); input 1.295 s.
MODEL = ASTConfig(model_size="tiny224", input_tdim=128, embed_dim=32, depth=1, num_heads=2, num_classes=3)
FRONTEND = FrontendConfig(target_length=128)
RATE = 16000


def _columns(target: torch.Tensor, c: int) -> list[int]:
    return torch.nonzero(target[:, c]).flatten().tolist()


def test_column_spans_are_the_tenth_second_grid():
    spans = column_spans(MODEL, FRONTEND)
    assert spans.shape == (12, 2)
    assert np.allclose(spans[:, 0], 0.1 * np.arange(12)) and np.allclose(spans[:, 1], 0.1 * np.arange(1, 13))


def test_frame_targets_counted_by_hand():
    """Column j = [0.1 j, 0.1 j + 0.1) s is positive when a class's events cover >= 0.05 s of it."""
    spans = column_spans(MODEL, FRONTEND)
    events = [(0.25, 0.64, 0),  # col 2 half covered (0.05: positive), 3-5 whole, col 6 0.04 (negative)
              (0.30, 0.50, 1), (0.45, 0.90, 1),  # overlapping events of one class: their union 0.3-0.9 = cols 3-8
              (0.0, 0.04, 2), (0.04, 0.08, 2)]  # two touching pieces of 0.04 s: union 0.08 >= 0.05 -> col 0
    target = frame_targets(events, spans, 3)
    assert target.shape == (12, 3) and target.dtype == torch.float32
    assert _columns(target, 0) == [2, 3, 4, 5]
    assert _columns(target, 1) == [3, 4, 5, 6, 7, 8]
    assert _columns(target, 2) == [0]


def test_events_crossing_the_crop_edges():
    """A file's events on the timeline of the crop [1.5, 2.7) s (12 columns): cut at both edges."""
    spans = column_spans(MODEL, FRONTEND)
    file_events = [(1.0, 2.37, 0),  # starts before the crop: 0-0.87 on it -> cols 0-8 (col 8 has 0.07 s)
                   (2.2, 5.0, 1),  # ends after the crop: 0.7-1.2 -> cols 7-11
                   (0.2, 1.0, 2), (3.0, 4.0, 2)]  # outside the crop: nothing
    cropped = crop_events(file_events, 1.5, 1.2)
    assert [c for *_, c in cropped] == [0, 1]
    assert np.allclose([t[:2] for t in cropped], [(0.0, 0.87), (0.7, 1.2)])
    target = frame_targets(cropped, spans, 3)
    assert _columns(target, 0) == list(range(9)) and _columns(target, 1) == [7, 8, 9, 10, 11]
    assert _columns(target, 2) == []
    # a crop of a file shorter than the input: only 0.83 s hold audio; an event to the file's end covers col 8 by
    # 0.03 s (negative) and no column past it
    target = frame_targets(crop_events([(0.5, 0.83, 0)], 0.0, 0.83), spans, 3)
    assert _columns(target, 0) == [5, 6, 7]


def _tone(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)


@pytest.fixture
def folder(tmp_path) -> Path:
    """long.wav (4 s: a dog 0.25-0.64 s, cats 0.3-0.5 and 0.45-2.0 s), sub/quiet.wav (1 s, background: in
    durations.tsv only), short.wav (0.83 s, a dog to its end), weak/w.wav (1 s, weak labels cat and bird)."""
    for name, seconds in (("long.wav", 4.0), ("sub/quiet.wav", 1.0), ("short.wav", 0.83), ("weak/w.wav", 1.0)):
        _tone(tmp_path / name, seconds)
    (tmp_path / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\nlong.wav\t0.25\t0.64\tdog\n"
                                         "long.wav\t0.3\t0.5\tcat\nlong.wav\t0.45\t2.0\tcat\nshort.wav\t0.5\t0.83\tdog\n")
    (tmp_path / "durations.tsv").write_text("filename\tduration\nlong.wav\t4.0\nsub/quiet.wav\t1.0\nshort.wav\t0.83\n")
    (tmp_path / "weak.tsv").write_text("filename\tevent_labels\nweak/w.wav\tcat,bird\n")
    return tmp_path


def test_folder_layout_items_by_hand(folder):
    data = load_sed_folder(folder, holdout=0.0)
    assert data.labels == ("bird", "cat", "dog")
    clips = {c.key: c for c in data.train + data.valid}
    assert set(clips) == {"long.wav", "sub/quiet.wav", "short.wav", "weak/w.wav"}
    dataset = SedDataset(list(clips.values()), data.labels, MODEL, FRONTEND, random_crops=False)
    items = {item[4]: item for item in (dataset[i] for i in range(len(dataset)))}
    x, frames, clip, strong, _ = items["long.wav"]  # crop [0, 1.295) s
    assert x.shape == (128, 128) and frames.shape == (12, 3) and strong
    assert _columns(frames, 2) == [2, 3, 4, 5] and _columns(frames, 1) == list(range(3, 12))
    assert _columns(frames, 0) == [] and clip.tolist() == [0.0, 1.0, 1.0]
    _, frames, clip, strong, _ = items["sub/quiet.wav"]  # background
    assert strong and frames.sum() == 0 and clip.sum() == 0
    _, frames, clip, strong, _ = items["short.wav"]  # padded to the input: columns past 0.83 s are 0
    assert _columns(frames, 2) == [5, 6, 7] and clip.tolist() == [0.0, 0.0, 1.0]
    _, frames, clip, strong, _ = items["weak/w.wav"]  # weak: clip labels, frame targets absent (masked)
    assert not strong and frames.sum() == 0 and clip.tolist() == [1.0, 1.0, 0.0]
    batch = sed_collate([items[k] for k in sorted(items)])
    assert batch.x.shape == (4, 128, 128) and batch.frames.shape == (4, 12, 3) and batch.y.shape == (4, 3)
    assert batch.strong.tolist() == [True, True, True, False]  # long, short, sub/quiet, weak/w
    weights = balanced_sed_weights(dataset)
    assert (weights > 0).all()  # the background file is drawn too


def test_random_crops_start_on_the_column_grid(folder):
    """Random crops of the 4 s file: each item's targets are the hand count of a crop starting at some k x 0.1 s."""
    data = load_sed_folder(folder, holdout=0.0)
    long = next(c for c in data.train + data.valid if c.key == "long.wav")
    dataset = SedDataset([long], data.labels, MODEL, FRONTEND, seed=3)
    spans = column_spans(MODEL, FRONTEND)
    starts = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        _, frames, _, _, _ = dataset[0]
        matches = [k for k in range(28) if torch.equal(frames, frame_targets(
            crop_events(long.events, 0.1 * k, FRONTEND.input_samples / RATE), spans, 3))]
        assert matches, epoch
        starts.add(matches[0])
    assert len(starts) > 3  # the crops move


def test_a_long_file_gives_one_training_item_per_input_length(folder):
    """Training items: a strong file round(duration / input) times (at least once), a weak clip once; validation
    (no random crops) keeps one item per file."""
    input_s = FRONTEND.input_samples / RATE  # 1.295 s
    long, short = SedClip("a.wav", "a.wav", 10 * input_s), SedClip("b.wav", "b.wav", 0.3)
    weak = SedClip("w.wav", "w.wav", 10 * input_s, weak=(0,))
    assert epoch_items([long, short, weak], input_s) == (long,) * 10 + (short, weak)
    data = load_sed_folder(folder, holdout=0.0)
    clips = sorted(data.train + data.valid, key=lambda c: c.key)  # long.wav is 4 s: 3 inputs
    assert [c.key for c in SedDataset(clips, data.labels, MODEL, FRONTEND).clips].count("long.wav") == 3
    assert len(SedDataset(clips, data.labels, MODEL, FRONTEND, random_crops=False)) == len(clips)


def test_mixup_mixes_frame_and_clip_targets(folder):
    data = load_sed_folder(folder, holdout=0.0)
    clips = sorted(data.train + data.valid, key=lambda c: c.key)
    dataset = SedDataset(clips, data.labels, MODEL, FRONTEND, AugmentConfig(mixup=1.0, timem=20, freqm=10),
                         random_crops=False)
    seen_weak_mix = False
    for index in range(len(clips)):
        _, frames, clip, strong, key = dataset[index]
        values = set(np.round(frames.flatten().numpy(), 6).tolist())
        assert len(values - {0.0, 1.0}) <= 2  # λ and 1 - λ (and their sum 1 where both have the class)
        assert 0 <= float(clip.min()) and float(clip.max()) <= 1.0 + 1e-6
        if key != "weak/w.wav" and not strong:
            seen_weak_mix = True  # mixed with the weak clip: frame targets unknown
    assert seen_weak_mix or all(dataset[i][3] for i in range(3))


def test_validation_folder_and_split(folder, tmp_path):
    data = load_sed_folder(folder, holdout=0.34, seed=0)
    assert len(data.valid) == 1 and not data.valid_is_train and all(c.strong for c in data.valid)
    assert {c.key for c in data.train} | {c.key for c in data.valid} == {"long.wav", "sub/quiet.wav", "short.wav",
                                                                          "weak/w.wav"}
    _tone(folder / "validation" / "v.wav", 2.0)
    (folder / "validation" / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\nv.wav\t0.1\t0.5\tdog\n")
    data = load_sed_folder(folder)
    assert [c.key for c in data.valid] == ["v.wav"] and len(data.train) == 4
    (folder / "validation" / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\nv.wav\t0.1\t0.5\tcow\n")
    with pytest.raises(ConfigError, match=r"validation/strong\.tsv:2: label 'cow' is not one of the 3 known"):
        load_sed_folder(folder)


@pytest.mark.parametrize("row, words", [
    ("long.wav\t3.0\t4.5\tdog\n", r"strong\.tsv:6: event 'dog' ends at 4\.5 s, after the file's end at 4 s"),
    ("gone.wav\t0\t1\tdog\n", r"strong\.tsv:6: file 'gone\.wav' is not one of the 4 known file"),
    ("long.wav\t2\t1\tdog\n", r"strong\.tsv:6: onset 2 s is after offset 1 s"),
])
def test_bad_strong_rows_name_file_and_row(folder, row, words):
    with open(folder / "strong.tsv", "a") as f:
        f.write(row)
    with pytest.raises(ConfigError, match=words):
        load_sed_folder(folder)
