"""Tiny data sets in the real on-disk layouts (ESC-50, Speech Commands v2, AudioSet JSON, class folders).

Content is learnable: each class is a distinct sound family at a class-specific frequency (tones, chirps,
band-limited noise bursts, amplitude-modulated tones), with per-clip jitter in pitch, onset, length, level and
background noise, so a small model can learn it and nothing is trivially identical. Everything is generated
from a seed; nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from ast_audio.labels import builtin_label_csv

LABELS_DIR = builtin_label_csv("audioset").parent  # the label files shipped with the package

# ESC-50's 50 categories in target order (spec §2.5); make_esc50 uses the first `classes`.
ESC50_CATEGORIES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain", "sea_waves",
    "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water", "toilet_flush",
    "thunderstorm", "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing",
    "door_wood_creaks", "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)
KINDS = ("tone", "chirp", "noise", "am")


def class_frequency(index: int) -> float:
    """A distinct centre frequency per class index (Hz): 300, 420, 540, ... (below 7 kHz for 55 classes)."""
    return 300.0 + 120.0 * index


def class_sound(index: int, num_samples: int, sample_rate: int, rng: np.random.Generator,
                kind: str | None = None) -> np.ndarray:
    """(num_samples,) float64 sound of class `index` (family `kind`, default KINDS[index % 4]); peak <= ~0.7."""
    kind = kind or KINDS[index % len(KINDS)]
    f0 = class_frequency(index) * rng.uniform(0.97, 1.03)
    t = np.arange(num_samples) / sample_rate
    if kind == "tone":
        x = np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
    elif kind == "chirp":
        f1 = f0 * rng.uniform(1.8, 2.2)  # linear sweep f0 -> f1 over the clip
        duration = max(t[-1], 1e-3)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration)))
    elif kind == "noise":
        spectrum = np.fft.rfft(rng.standard_normal(num_samples))
        freqs = np.fft.rfftfreq(num_samples, 1 / sample_rate)
        spectrum[np.abs(freqs - f0) > 0.15 * f0] = 0  # band-limited around f0
        x = np.fft.irfft(spectrum, n=num_samples)
        x = x / (np.abs(x).max() + 1e-9)
        bursts = (np.sin(2 * np.pi * rng.uniform(3, 6) * t) > 0).astype(np.float64)  # on/off bursts
        x = x * bursts
    elif kind == "am":
        x = np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(8, 14) * t))
    else:
        raise ValueError(f"unknown sound kind {kind!r}; expected one of {KINDS}")
    # Random onset/offset envelope covering at least half the clip.
    length = int(num_samples * rng.uniform(0.5, 1.0))
    start = int(rng.integers(0, num_samples - length + 1))
    envelope = np.zeros(num_samples)
    envelope[start:start + length] = 1.0
    return x * envelope * rng.uniform(0.25, 0.6)


def render(indices: Sequence[int], seconds: float, sample_rate: int, rng: np.random.Generator,
           kinds: Sequence[str | None] | None = None) -> np.ndarray:
    """(N,) float32 clip: the sum of the given classes' sounds plus faint background noise, peak < 1."""
    n = int(round(seconds * sample_rate))
    kinds = kinds or [None] * len(indices)
    x = sum((class_sound(i, n, sample_rate, rng, k) for i, k in zip(indices, kinds, strict=True)), np.zeros(n))
    x = x + rng.uniform(0.002, 0.01) * rng.standard_normal(n)
    peak = np.abs(x).max()
    if peak > 0.95:
        x = x * (0.95 / peak)
    return x.astype(np.float32)


def _write(path: Path, data: np.ndarray, sample_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sample_rate, subtype="PCM_16")
    return path


def make_esc50(root, *, classes: int = 4, clips_per_class_per_fold: int = 2, seconds: float = 1.0,
               sample_rate: int = 44100, seed: int = 0) -> Path:
    """ESC-50 release layout: audio/{fold}-{id}-A-{target}.wav (44.1 kHz like the originals), meta/esc50.csv."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    clip_id = 100000
    for fold in range(1, 6):
        for target in range(classes):
            for _ in range(clips_per_class_per_fold):
                clip_id += 1
                name = f"{fold}-{clip_id}-A-{target}.wav"
                _write(root / "audio" / name, render([target], seconds, sample_rate, rng), sample_rate)
                rows.append([name, fold, target, ESC50_CATEGORIES[target], "False", str(clip_id), "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with (root / "meta" / "esc50.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def make_speechcommands(root, *, words: Sequence[str] = ("yes", "no", "up"), clips_per_word: int = 6,
                        seconds: float = 1.0, seed: int = 0) -> Path:
    """Speech Commands v2 layout: word/{speaker}_nohash_{n}.wav, validation_list.txt, testing_list.txt,
    _background_noise_/white_noise.wav. Per word, clips 1/6 go to validation and 1/6 to testing (at least one each).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sample_rate = 16000
    valid, test = [], []
    for w, word in enumerate(words):
        n_held = max(1, clips_per_word // 6)
        for i in range(clips_per_word):
            key = f"{word}/{rng.integers(0, 2**32):08x}_nohash_{i % 3}.wav"
            _write(root / key, render([w], seconds, sample_rate, rng), sample_rate)
            if i >= clips_per_word - n_held:
                test.append(key)
            elif i >= clips_per_word - 2 * n_held:
                valid.append(key)
    (root / "validation_list.txt").write_text("".join(k + "\n" for k in valid))
    (root / "testing_list.txt").write_text("".join(k + "\n" for k in test))
    noise = (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32)
    _write(root / "_background_noise_" / "white_noise.wav", noise, sample_rate)
    (root / "_background_noise_" / "README.md").write_text("background noise files\n")
    return root


def _audioset_classes(count: int) -> list[tuple[str, str]]:
    """(mid, display_name) of the first `count` rows of the real AudioSet label CSV."""
    with (LABELS_DIR / "audioset_class_labels_indices.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["mid"], r["display_name"]) for r in rows[:count]]


def make_audioset(root, *, classes: int = 5, train_clips: int = 24, eval_clips: int = 10, seconds: float = 1.0,
                  seed: int = 0) -> tuple[Path, Path, Path]:
    """AudioSet-style JSON datafiles (multi-label, mids from the real CSV) and a class_labels_indices.csv.

    train.json starts with a `#` comment line (as the reference's sample files) and uses paths relative to its
    folder; eval.json uses absolute paths. Every class appears in train; clips have 1 or 2 labels.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sample_rate = 16000
    pairs = _audioset_classes(classes)
    label_csv = root / "class_labels_indices.csv"
    root.mkdir(parents=True, exist_ok=True)
    with label_csv.open("w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        f.write("index,mid,display_name\n")
        for i, (mid, name) in enumerate(pairs):
            writer.writerow([i, mid, name])

    def entries(split: str, n: int, absolute: bool) -> list[dict]:
        out = []
        for i in range(n):
            first = i % classes
            labels = [first]
            if rng.uniform() < 0.4 and classes > 1:
                labels.append(int((first + rng.integers(1, classes)) % classes))
            rel = f"audio/{split}/{split}_{i:04d}.wav"
            _write(root / rel, render(labels, seconds, sample_rate, rng), sample_rate)
            wav = str((root / rel).resolve()) if absolute else rel
            out.append({"wav": wav, "labels": ",".join(pairs[c][0] for c in labels), "video_id": f"vid{i:05d}"})
        return out

    train_json = root / "train.json"
    train_json.write_text("# AudioSet-style datafile (generated)\n" + json.dumps({"data": entries("train", train_clips,
                                                                                                 False)}))
    eval_json = root / "eval.json"
    eval_json.write_text(json.dumps({"data": entries("eval", eval_clips, True)}))
    return train_json, eval_json, label_csv


def make_folder(root, *, classes: Sequence[str] = ("tone", "chirp", "noise"), clips_per_class: int = 8,
                seconds: float = 1.0, seed: int = 0) -> Path:
    """A folder of class sub-folders: {class}/{class}_{i:03d}.wav at 16 kHz.

    A class named after a sound family (tone, chirp, noise, am) is that family at varied frequencies (learnable
    from the shape, not the pitch); any other name gets family KINDS[i % 4] at its class frequency.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sample_rate = 16000
    for c, name in enumerate(classes):
        for i in range(clips_per_class):
            if name in KINDS:
                index, kind = int(rng.integers(0, 12)), name
            else:
                index, kind = c, None
            audio = render([index], seconds, sample_rate, rng, kinds=[kind])
            _write(root / name / f"{name}_{i:03d}.wav", audio, sample_rate)
    return root
