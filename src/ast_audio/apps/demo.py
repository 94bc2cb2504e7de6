"""The offline demo: generate a small labelled sound set, train a tiny AST on CPU, evaluate, save, tag; and scenes of
demo sounds at known times to test sound-event detection on (`make_scene`, `write_scenes`).

Nothing is downloaded. Four classes of 1-2 s clips at 16 kHz, each with random frequencies, levels, onsets
and a background noise floor, plus background-only clips (the noise floor alone, no class):
- tone: a steady sine;
- chirp: a sine gliding up over 1-2.5 octaves;
- noise_burst: a 0.15-0.6 s burst of (optionally low-passed) white noise;
- click_train: short decaying clicks repeated every 15-80 ms.

The background clips sit in a `_background` folder, which the folder layout reads as an all-zero target, so the
model is multi-label (BCE loss, sigmoid scores): each class scores on its own, and quiet scores low everywhere,
which is what sound-event detection needs (a softmax model must give the quiet between sounds to some class).

The model is trained by the training engine with the `folder` recipe (`ast_audio.train.engine.run`: the same loop,
checkpoints and metrics as `ast-audio train`), sized for a CPU: a 64-wide, 2-block AST on 2 s inputs, no
augmentation, a higher learning rate than the recipe's, `EPOCHS` epochs on `THREADS` torch threads. `bench --accuracy`
trains the same model the same way (`train_demo_model`).

The same model on every machine: nothing here depends on how fast the machine is. A fixed epoch count (the time
budget only warns when training takes longer), seeded data and training, and a fixed thread count (`fixed_threads`:
torch's results can depend on how many threads split a reduction, and on a busy machine threads beyond the free
cores only wait for each other).
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..config import SAMPLE_RATE, FrontendConfig
from ..infer.tagger import Tagger
from ..train.data import ClipDataset
from ..train.engine import RunResult, run
from ..train.layouts import BACKGROUND, load_splits
from ..train.recipes import TrainConfig, make_recipe
from ..train.stats import norm_stats
from ..utils import atomic_path, atomic_write_text
from ..weights.checkpoint import load_model

CLASSES = ("tone", "chirp", "noise_burst", "click_train")
CLIPS_PER_CLASS = 80
TEST_PER_CLASS = 20
INPUT_TDIM = 200  # 2.005 s at 16 kHz: every generated clip fits one input
EPOCHS = 40
# torch intra-op threads of the demo and of `bench --accuracy` (see `fixed_threads`).
THREADS = 1
# What the demo's model reaches on its held-out clips on every machine measured (seeds 0-4); less gets a warning.
EXPECTED_ACCURACY = 0.95
# The small model and schedule (`demo_config`): trained from scratch in about 25 s on 2 CPU cores.
MODEL = dict(model_size="tiny224", model_config=dict(embed_dim=64, depth=2, num_heads=4))
# The folder recipe's lr decay (x0.85 per epoch from epoch 5) would leave a 40-epoch run of ~15 steps per epoch with
# too little learning (held-out accuracy 0.5 on the bench's 60-clip classes); x0.93 from epoch 10 gives ~0.9.
SCHEDULE = dict(batch_size=16, lr=5e-4, freqm=0, timem=0, selection="last", lr_scheduler_start=10,
                lr_scheduler_decay=0.93)


@dataclass
class DemoResult:
    accuracy: float  # test top-1 accuracy in [0, 1]
    num_test: int
    train_seconds: float
    epochs: int
    data_dir: Path
    model_dir: Path
    background_score: float = math.nan  # mean over background test clips of the highest class score


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * SAMPLE_RATE))
    ramp = np.linspace(0.0, 1.0, n)
    x[:n] *= ramp
    x[len(x) - n:] *= ramp[::-1]
    return x


def background_noise(n: int, rng: np.random.Generator, level: tuple[float, float] = (0.002, 0.02)) -> np.ndarray:
    """(n,) float64 quiet background: white noise at an RMS drawn from `level`, low-passed half of the time. The
    noise floor under every demo clip, the whole of a background clip, and the bed of a generated scene."""
    noise = rng.uniform(*level) * rng.standard_normal(n)
    if rng.random() < 0.5:  # one-pole low-pass: a duller hum, still no class
        alpha = rng.uniform(0.5, 0.95)
        noise = _one_pole(noise, alpha) / np.sqrt((1 - alpha) / (1 + alpha))  # keep the RMS
    return noise


def _one_pole(x: np.ndarray, alpha: float) -> np.ndarray:
    """The one-pole low-pass y[i] = alpha y[i-1] + (1 - alpha) x[i] (y[-1] = 0)."""
    y = np.empty_like(x)
    acc = 0.0
    for i in range(len(x)):  # plain loop: clips are short; scenes call it once per minute of audio at most
        acc = alpha * acc + (1 - alpha) * x[i]
        y[i] = acc
    return y


def synth_event(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of class `kind` alone: (<= length,) float64 with 10 ms fades, peak `level` in 0.1-0.5 (a noise
    burst is cut to 0.15-0.6 s, so it may be shorter than `length`)."""
    t = np.arange(length) / SAMPLE_RATE
    level = rng.uniform(0.1, 0.5)
    if kind == "tone":
        event = np.sin(2 * np.pi * rng.uniform(200, 3000) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "chirp":
        f0, octaves = rng.uniform(200, 1000), rng.uniform(1.0, 2.5)
        rate = octaves / t[-1]  # octaves per second; instantaneous frequency f0 * 2^(rate t)
        phase = 2 * np.pi * f0 * (np.exp2(rate * t) - 1) / (rate * math.log(2))
        event = np.sin(phase)
    elif kind == "noise_burst":
        length = min(length, int(rng.uniform(0.15, 0.6) * SAMPLE_RATE))
        event = rng.standard_normal(length)
        if rng.random() < 0.5:  # one-pole low-pass for some colour
            event = _one_pole(event, rng.uniform(0.5, 0.95))
        event /= np.abs(event).max()
    elif kind == "click_train":
        period = int(rng.uniform(0.015, 0.08) * SAMPLE_RATE)
        click_len = int(0.003 * SAMPLE_RATE)
        click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (click_len / 4))
        event = np.zeros(length)
        for start in range(0, length - click_len, period):
            event[start:start + click_len] += click
        event /= np.abs(event).max()
    else:
        raise ValueError(f"unknown class {kind!r}; expected one of {CLASSES}")
    return level * _fade(event)


def synth_clip(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One clip of class `kind` (or `BACKGROUND`: the noise floor alone): (N,) float32 at 16 kHz, 1-2 s, peak
    below 1."""
    n = int(rng.uniform(1.0, 2.0) * SAMPLE_RATE)
    clip = background_noise(n, rng)
    if kind == BACKGROUND:
        return clip.astype(np.float32)
    onset = int(rng.uniform(0.0, 0.3) * SAMPLE_RATE)
    length = n - onset - int(rng.uniform(0.0, 0.2) * SAMPLE_RATE)
    event = synth_event(kind, length, rng)
    clip[onset:onset + len(event)] += event
    return clip.astype(np.float32)


def synth_mixture(kinds: tuple[str, str], rng: np.random.Generator) -> np.ndarray:
    """Two sounds of different classes in one 2 s clip, the second starting 0.3-0.8 s after the first (as a scene's
    overlapping sounds do): (N,) float32 at 16 kHz over the background noise floor."""
    n = 2 * SAMPLE_RATE
    clip = background_noise(n, rng)
    first = int(rng.uniform(0.0, 0.3) * SAMPLE_RATE)
    for k, kind in enumerate(kinds):
        start = first + (int(rng.uniform(0.3, 0.8) * SAMPLE_RATE) if k else 0)
        sound = synth_event(kind, min(n - start, int(rng.uniform(1.0, 1.6) * SAMPLE_RATE)), rng)
        clip[start:start + len(sound)] += sound
    return (clip / max(1.0, float(np.abs(clip).max()) / 0.99)).astype(np.float32)


def make_dataset(folder: Path, seed: int = 0, clips_per_class: int = CLIPS_PER_CLASS,
                 test_per_class: int = TEST_PER_CLASS, background_clips: int | None = None,
                 mixtures: int | None = None) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Write folder/{train,test}/<class>/*.wav, background-only clips in folder/{train,test}/_background/,
    two-class mixtures in folder/train/_mixture/, the manifests train.csv/test.csv (path,label; a mixture's label
    is "a;b", a background clip's `_background`: the folder layout's all-zero target,
    `ast_audio.train.layouts.BACKGROUND`) and class_labels_indices.csv (the class order of `CLASSES`).

    `background_clips` (default `clips_per_class`) background clips are split like a class; `mixtures` (default
    half of `clips_per_class`) mixtures of two classes are for training only, so that the held-out accuracy stays
    a single-label top-1 accuracy. Returns the (path, class index) lists of the train and test splits; background
    clips have index -1, mixtures -2 (both after the classes' clips).
    """
    rng = np.random.default_rng(seed)
    background_clips = clips_per_class if background_clips is None else background_clips
    mixtures = clips_per_class // 2 if mixtures is None else mixtures
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    names: dict[Path, str] = {}
    kinds = [(label, kind, clips_per_class) for label, kind in enumerate(CLASSES)]
    kinds.append((-1, BACKGROUND, background_clips))
    for label, kind, count in kinds:
        n_test = round(test_per_class * count / clips_per_class) if clips_per_class else 0
        for i in range(count):
            split = "test" if i < n_test else "train"
            path = folder / split / kind / f"{kind.strip('_')}_{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), synth_clip(kind, rng), SAMPLE_RATE, subtype="PCM_16")
            splits[split].append((path, label))
            names[path] = kind
    for i in range(mixtures):
        pair = tuple(str(k) for k in rng.choice(CLASSES, size=2, replace=False))
        path = folder / "train" / "_mixture" / f"mixture_{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), synth_mixture(pair, rng), SAMPLE_RATE, subtype="PCM_16")
        splits["train"].append((path, -2))
        names[path] = ";".join(pair)
    for split, items in splits.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([(str(p.relative_to(folder)), names[p]) for p, _ in items])
    with open(folder / "class_labels_indices.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([(i, f"/demo/{i}", name) for i, name in enumerate(CLASSES)])
    return splits["train"], splits["test"]


# ----------------------------------------------------------------------------------------------------------------------
# Scenes: minutes of background with demo sounds at known times


# A scene's background RMS: the quiet end of the clips' noise floors. The floor under a training clip reaches 0.02
# RMS, as loud as a sparse click train at its lowest level (0.1 peak, 3 ms clicks up to 80 ms apart: ~0.01 RMS), so
# a whole scene at that floor would hold "events" that are not audible; at <= 0.006 every sound is >= 6 dB above it.
SCENE_BED = (0.002, 0.006)


@dataclass(frozen=True)
class SceneEvent:
    """One placed sound: class label, onset and offset in seconds (where its samples start and end)."""

    label: str
    onset_s: float
    offset_s: float


def swell_envelope(n: int, rng: np.random.Generator, swell_db: float,
                   knot_s: tuple[float, float] = (4.0, 12.0)) -> np.ndarray:
    """(n,) gain of a background that swells and fades: between 1 (0 dB) and `swell_db` dB, moving smoothly
    (cosine-interpolated) between random levels at random knots `knot_s` seconds apart."""
    knots = [0.0]
    while knots[-1] < n / SAMPLE_RATE:
        knots.append(knots[-1] + rng.uniform(*knot_s))
    levels = rng.uniform(0.0, 1.0, len(knots))
    t = np.arange(n) / SAMPLE_RATE
    k = np.searchsorted(knots, t, side="right") - 1  # the knot before each sample
    frac = (t - np.take(knots, k)) / (np.take(knots, k + 1) - np.take(knots, k))
    weight = 0.5 - 0.5 * np.cos(np.pi * frac)  # 0 at the left knot, 1 at the right one
    position = levels[k] + (levels[k + 1] - levels[k]) * weight  # (n,) in [0, 1]
    return 10.0 ** (swell_db * position / 20.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def make_scene(duration_s: float, rng: np.random.Generator, *, gap_s: tuple[float, float] = (0.2, 1.5),
               overlap: float = 0.2, classes: tuple[str, ...] = CLASSES, swell_db: float = 0.0,
               snr_db: tuple[float, float] | None = None) -> tuple[np.ndarray, list[SceneEvent]]:
    """A scene of `duration_s` seconds: the demo's background noise (at `SCENE_BED`) throughout, demo sounds (1-2 s;
    noise bursts 0.15-0.6 s) one after another separated by `gap_s` seconds of background, a fraction `overlap` of
    them starting inside the previous sound instead (0.3-0.8 s after its onset, of a class not sounding then), so
    some events overlap; events of one class never touch (the scorers require that).

    The harder conditions of real recordings (both off by default, which keeps the scenes of earlier versions):
    `swell_db` > 0 makes the background swell and fade by up to that many dB (`swell_envelope`); `snr_db`
    (low, high) sets each sound's level to a signal-to-noise ratio drawn from that range in dB, its RMS over the
    RMS of the background under it (default: a peak level of 0.1-0.5, >= 6 dB above the steady bed), so a range
    such as (0, 10) gives sounds only a little above a loud stretch of background.

    Returns the (N,) float32 waveform (peak below 1) and the events sorted by onset.
    """
    n = int(round(duration_s * SAMPLE_RATE))
    scene = background_noise(n, rng, SCENE_BED)
    if swell_db > 0:
        scene *= swell_envelope(n, rng, swell_db)
    bed = scene.copy() if snr_db is not None else scene  # the background alone, for the sounds' levels
    events: list[SceneEvent] = []
    at = rng.uniform(*gap_s)
    previous: SceneEvent | None = None
    while True:
        kind = str(rng.choice(classes))
        start = at
        if previous is not None and rng.random() < overlap:
            start = previous.onset_s + rng.uniform(0.3, 0.8)
            # a class still sounding (or just ended) at `start` would give two connected events of one class
            busy = {e.label for e in events if e.offset_s > start - 0.2}
            kind = str(rng.choice([c for c in classes if c not in busy] or [kind]))
            if kind in busy:
                start = at
        length = int(rng.uniform(1.0, 2.0) * SAMPLE_RATE)
        first = int(round(start * SAMPLE_RATE))
        if first + length > n - int(0.2 * SAMPLE_RATE):
            break
        sound = synth_event(kind, length, rng)
        if snr_db is not None:
            under = _rms(bed[first:first + len(sound)])
            sound *= under * 10.0 ** (rng.uniform(*snr_db) / 20.0) / max(_rms(sound), 1e-12)
        scene[first:first + len(sound)] += sound
        event = SceneEvent(kind, first / SAMPLE_RATE, (first + len(sound)) / SAMPLE_RATE)
        events.append(event)
        previous = event
        at = max(at, event.offset_s) + rng.uniform(*gap_s)
    scene /= max(1.0, float(np.abs(scene).max()) / 0.99)
    events.sort(key=lambda e: (e.onset_s, e.label))
    return scene.astype(np.float32), events


STRONG_TSV = "strong.tsv"  # the layout `train --recipe sed` reads (docs/training-data.md)
DURATIONS_TSV = "durations.tsv"


def write_scenes(folder: str | Path, count: int = 5, duration_s: float = 120.0, *, seed: int = 0,
                 audio_format: str = "wav", gap_s: tuple[float, float] = (0.2, 1.5), overlap: float = 0.2,
                 swell_db: float = 0.0, snr_db: tuple[float, float] | None = None) -> tuple[list[Path], Path, Path]:
    """Write `count` scenes (`make_scene`, its options passed on) as folder/scene_NNN.wav (or .flac), their true
    events as folder/strong.tsv (`filename onset offset event_label`, the DCASE ground-truth format, file names
    relative to `folder`) and every scene's length as folder/durations.tsv (`filename duration`): the layout of
    `train --recipe sed`, in which a scene without events (one too short for a sound) is background, present in
    durations.tsv only. Returns (audio paths, strong.tsv path, durations path)."""
    from ..infer.formats import dcase_durations, dcase_events

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, truth, durations = [], [], {}
    for i in range(count):
        audio, events = make_scene(duration_s, rng, gap_s=gap_s, overlap=overlap, swell_db=swell_db, snr_db=snr_db)
        path = folder / f"scene_{i:03d}.{audio_format}"
        with atomic_path(path) as tmp:
            sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format=audio_format.upper())
        paths.append(path)
        truth.extend((path.name, e.onset_s, e.offset_s, e.label) for e in events)
        durations[path.name] = len(audio) / SAMPLE_RATE
    atomic_write_text(folder / STRONG_TSV, dcase_events(truth))
    atomic_write_text(folder / DURATIONS_TSV, dcase_durations(durations))
    return paths, folder / STRONG_TSV, folder / DURATIONS_TSV


@contextlib.contextmanager
def fixed_threads(threads: int = THREADS) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, the caller's count restored after.

    One count for every run of a command makes its results the same on a busy machine as on an idle one (a
    reduction split over another number of threads sums in another order), and keeps a command from starting one
    spinning thread per core when other processes already use the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def near_chance(correct: int, total: int, num_classes: int, p_value: float = 1e-3) -> bool:
    """Could guessing have scored `correct` of `total` among `num_classes` classes? True when a uniform guess gets
    at least that many right with probability above `p_value` (the exact binomial tail), so the number says
    nothing about what the model learned."""
    chance = 1 / num_classes
    tail = sum(math.comb(total, k) * chance ** k * (1 - chance) ** (total - k) for k in range(correct, total + 1))
    return tail > p_value


def demo_config(data_dir: Path, *, epochs: int = EPOCHS, seed: int = 0, mean: float, std: float) -> TrainConfig:
    """The `folder` recipe on the demo data (train.csv trains, test.csv is the held-out validation split) with the
    demo's small model and schedule, normalised with the training set's `mean` / `std`; no time budget (the run
    always trains `epochs` epochs)."""
    return make_recipe("folder", data=str(data_dir / "train.csv"), eval_data=str(data_dir / "test.csv"),
                       label_csv=str(data_dir / "class_labels_indices.csv"), epochs=epochs, target_length=INPUT_TDIM,
                       mean=mean, std=std, seed=seed, device="cpu", num_workers=0, tensorboard=False, progress=False,
                       time_budget_s=None, **MODEL, **SCHEDULE)


def train_demo_model(data_dir: Path, out: Path, *, epochs: int = EPOCHS, seed: int = 0,
                     log: Callable[[str], None] = print) -> tuple[RunResult, TrainConfig]:
    """Train the demo's model on the data `make_dataset` wrote in `data_dir` into the run folder `out` (replaced if
    it holds an earlier run): the normalisation statistics of the training clips (the reference's way,
    `train.stats.norm_stats`), then `train.engine.run` for `epochs` epochs. Returns the run's result and config.
    Run it inside `fixed_threads` for a model that does not depend on the machine's load."""
    splits = load_splits("folder", data_dir / "train.csv", eval_data=str(data_dir / "test.csv"),
                         label_csv=str(data_dir / "class_labels_indices.csv"))
    stats = norm_stats(ClipDataset(splits.train, FrontendConfig(target_length=INPUT_TDIM), normalize=False),
                       batch_size=16, seed=seed)
    log(f"      mean {stats.mean:.4f}, std {stats.std:.4f} (average of per-batch statistics, padding included)")
    config = demo_config(data_dir, epochs=epochs, seed=seed, mean=stats.mean, std=stats.std)
    if (out / "checkpoint").exists() or (out / "model").exists():
        shutil.rmtree(out)  # an earlier demo run in this folder: the demo starts over, as `--out` promises
    result = run(config, out, printer=lambda message: log(f"  {message}"))
    assert isinstance(result, RunResult)  # one run: the folder recipe has no folds
    return result, config


def run_demo(out: str | Path = "demo-output", seconds_budget: float | None = 90.0, seed: int = 0,
             log: Callable[[str], None] = print, *, threads: int = THREADS) -> DemoResult:
    """Generate data under `out`, train a tiny AST with the training engine for `EPOCHS` epochs on `threads` torch
    threads, report the held-out accuracy, keep the model in out/model (native format; the training run in
    out/training) and tag two test clips with it. `seconds_budget` never stops training: a run that takes longer
    gets a warning line, and the same model."""
    with fixed_threads(threads):
        return _run_demo(Path(out), seconds_budget, seed, log, threads)


def _run_demo(out: Path, seconds_budget: float | None, seed: int, log: Callable[[str], None],
              threads: int) -> DemoResult:
    data_dir = out / "data"
    log(f"[1/5] generating {len(CLASSES)} classes x {CLIPS_PER_CLASS} clips of 1-2 s at {SAMPLE_RATE} Hz "
        f"({', '.join(CLASSES)}), {CLIPS_PER_CLASS} background-only clips and {CLIPS_PER_CLASS // 2} two-class "
        f"mixtures under {data_dir}")
    train_items, all_test = make_dataset(data_dir, seed=seed)
    test_items = [(p, y) for p, y in all_test if y >= 0]
    background = [p for p, y in all_test if y == -1]
    log(f"      {len(train_items)} train / {len(all_test)} test clips ({len(background)} of them background)")

    log("[2/5] normalisation statistics of the training clips' log-mel features")
    spec = MODEL["model_config"]
    log(f"[3/5] training a tiny AST ({spec['depth']} blocks, width {spec['embed_dim']}, {INPUT_TDIM} frames) with "
        f"the folder recipe for {EPOCHS} epochs on CPU, {threads} torch thread{'s' if threads > 1 else ''} (fixed: "
        "the same model on a busy machine)")
    start = time.perf_counter()
    result, _ = train_demo_model(data_dir, out / "training", seed=seed, log=log)
    train_seconds = time.perf_counter() - start
    last = result.rows[-1]
    accuracy, epochs = float(last["acc"]), int(last["epoch"])  # over the clips with a class (train.metrics)
    correct = round(accuracy * len(test_items))
    log(f"[4/5] test accuracy: {accuracy:.3f} ({correct}/{len(test_items)}; chance is {1 / len(CLASSES):.2f}) "
        f"after {epochs} epochs, {train_seconds:.1f} s of training; test mAP {float(last['mAP']):.3f}")
    for line in _result_warnings(correct, len(test_items), train_seconds, seconds_budget):
        log(line)

    # The model where earlier versions of the demo put it (out/model; the README's commands read it there); the
    # training run's own folder (out/training) keeps its checkpoint, metrics and copy of the model.
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(result.model_dir, model_dir)
    log(f"      saved the model to {model_dir} (ast_audio.load_model or `ast-audio tag --checkpoint` read it)")

    tagger = Tagger(load_model(model_dir))
    # Multi-label scores: on a background clip every class should score low (what lets `events` stay quiet).
    background_top = [max(score for _, score in r.top) for r in tagger.tag(background, top_k=1)]
    background_score = float(np.mean(background_top)) if background_top else math.nan
    log(f"      background clips: highest class score {background_score:.3f} on average "
        f"(max {max(background_top, default=math.nan):.3f}; sigmoid scores, multi-label)")
    log("[5/5] tagging two test clips with the saved model:")
    examples = [test_items[0][0], test_items[-1][0]]
    for tagged, (path, label) in zip(tagger.tag(examples, top_k=2), (test_items[0], test_items[-1]), strict=True):
        tops = ", ".join(f"{name} {score:.3f}" for name, score in tagged.top)
        log(f"      {path.relative_to(out)} (true: {CLASSES[label]}): {tops}")
    return DemoResult(accuracy=accuracy, num_test=len(test_items), train_seconds=train_seconds, epochs=epochs,
                      data_dir=data_dir, model_dir=model_dir, background_score=background_score)


def _result_warnings(correct: int, total: int, train_seconds: float, seconds_budget: float | None) -> list[str]:
    """The demo's warning lines: a result near chance (or below what the demo reaches everywhere), a slow run."""
    lines = []
    if near_chance(correct, total, len(CLASSES)):
        lines.append(f"warning: test accuracy {correct}/{total} is near chance ({1 / len(CLASSES):.2f}): this model "
                     "has learned nothing; please report it with the output above")
    elif correct < EXPECTED_ACCURACY * total:
        lines.append(f"warning: test accuracy {correct / total:.3f} is below the {EXPECTED_ACCURACY:.2f} the demo "
                     "reaches on the machines measured; please report it with the output above")
    if seconds_budget is not None and train_seconds > seconds_budget:
        lines.append(f"warning: training took {train_seconds:.0f} s, over the {seconds_budget:g} s budget (a busy "
                     f"or slow machine); it ran its {EPOCHS} epochs all the same, so the model is the one it "
                     "would be on an idle machine")
    return lines
