"""The offline demo: generate a small labelled sound set, train a tiny AST on CPU, evaluate, save, tag.

Nothing is downloaded. Four classes of 1-2 s clips at 16 kHz, each with random frequencies, levels, onsets
and a background noise floor:
- tone: a steady sine;
- chirp: a sine gliding up over 1-2.5 octaves;
- noise_burst: a 0.15-0.6 s burst of (optionally low-passed) white noise;
- click_train: short decaying clicks repeated every 15-80 ms.

The training loop is deliberately small (AdamW, softmax cross-entropy, full-batch features held in memory) and
stands in for the real training engine.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .audio.features import FeatureExtractor
from .audio.io import load_audio
from .config import ASTConfig, FrontendConfig
from .model import AST

CLASSES = ("tone", "chirp", "noise_burst", "click_train")
SAMPLE_RATE = 16000
CLIPS_PER_CLASS = 80
TEST_PER_CLASS = 20
INPUT_TDIM = 200  # 2.005 s at 16 kHz: every generated clip fits one input


@dataclass
class DemoResult:
    accuracy: float  # test top-1 accuracy in [0, 1]
    num_test: int
    train_seconds: float
    epochs: int
    data_dir: Path
    model_dir: Path


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * SAMPLE_RATE))
    ramp = np.linspace(0.0, 1.0, n)
    x[:n] *= ramp
    x[len(x) - n:] *= ramp[::-1]
    return x


def synth_clip(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One clip of class `kind`: (N,) float32 at 16 kHz, 1-2 s, peak below 1."""
    n = int(rng.uniform(1.0, 2.0) * SAMPLE_RATE)
    clip = rng.uniform(0.002, 0.02) * rng.standard_normal(n)  # background noise floor
    onset = int(rng.uniform(0.0, 0.3) * SAMPLE_RATE)
    length = n - onset - int(rng.uniform(0.0, 0.2) * SAMPLE_RATE)
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
            alpha = rng.uniform(0.5, 0.95)
            for i in range(1, length):
                event[i] = alpha * event[i - 1] + (1 - alpha) * event[i]
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
    clip[onset:onset + len(event)] += level * _fade(event)
    return clip.astype(np.float32)


def make_dataset(folder: Path, seed: int = 0, clips_per_class: int = CLIPS_PER_CLASS,
                 test_per_class: int = TEST_PER_CLASS) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Write folder/{train,test}/<class>/*.wav, train.csv/test.csv (path,label) and class_labels_indices.csv.

    Returns the (path, class index) lists of the train and test splits.
    """
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, kind in enumerate(CLASSES):
        for i in range(clips_per_class):
            split = "test" if i < test_per_class else "train"
            path = folder / split / kind / f"{kind}_{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), synth_clip(kind, rng), SAMPLE_RATE, subtype="PCM_16")
            splits[split].append((path, label))
    for split, items in splits.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([(str(p.relative_to(folder)), CLASSES[y]) for p, y in items])
    with open(folder / "class_labels_indices.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([(i, f"/demo/{i}", name) for i, name in enumerate(CLASSES)])
    return splits["train"], splits["test"]


def norm_stats(frames: torch.Tensor, batch_size: int = 16) -> tuple[float, float]:
    """Dataset mean and std of unnormalised, padded fbank frames (B, T, F), the reference's way (spec §2.1):
    the average of per-batch means and the average of per-batch stds."""
    means, stds = [], []
    for lo in range(0, frames.shape[0], batch_size):
        batch = frames[lo:lo + batch_size]
        means.append(batch.mean().item())
        stds.append(batch.std().item())
    return float(np.mean(means)), float(np.mean(stds))


def train(model: AST, x: torch.Tensor, y: torch.Tensor, seconds_budget: float, max_epochs: int = 40,
          batch_size: int = 16, lr: float = 5e-4, seed: int = 0, log: Callable[[str], None] = print) -> int:
    """Train `model` on (B, T, F) inputs `x` and class indices `y` with AdamW and cross-entropy.

    Stops after `max_epochs` or once `seconds_budget` is spent (checked after each epoch). Returns the epochs run.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    # Cosine decay to 0 over max_epochs: late epochs take small steps, which steadies test accuracy.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs * steps_per_epoch)
    model.train()
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(x.shape[0], generator=generator)
        total, correct = 0.0, 0
        for lo in range(0, x.shape[0], batch_size):
            index = order[lo:lo + batch_size]
            logits = model(x[index])
            loss = torch.nn.functional.cross_entropy(logits, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(dim=1) == y[index]).sum())
        elapsed = time.perf_counter() - start
        log(f"  epoch {epoch:2d}  loss {total / x.shape[0]:.4f}  train acc {correct / x.shape[0]:.3f}  "
            f"({elapsed:.1f} s)")
        if elapsed > seconds_budget:
            log(f"  time budget of {seconds_budget:g} s reached, stopping")
            break
    model.eval()
    return epoch


def run_demo(out: str | Path = "demo-output", seconds_budget: float = 90.0, seed: int = 0,
             log: Callable[[str], None] = print) -> DemoResult:
    """Generate data under `out`, train a tiny AST within `seconds_budget` s of training, report test accuracy,
    save the model to out/model (native format) and tag two test clips with it."""
    from .infer.tagger import Tagger
    from .weights.checkpoint import load_model, save_model

    out = Path(out)
    data_dir = out / "data"
    torch.manual_seed(seed)

    log(f"[1/5] generating {len(CLASSES)} classes x {CLIPS_PER_CLASS} clips of 1-2 s at {SAMPLE_RATE} Hz "
        f"({', '.join(CLASSES)}) under {data_dir}")
    train_items, test_items = make_dataset(data_dir, seed=seed)
    log(f"      {len(train_items)} train / {len(test_items)} test clips")

    log("[2/5] computing log-mel features and normalisation statistics from the training set")
    unnormalised = FeatureExtractor(FrontendConfig(target_length=INPUT_TDIM))
    # B x (T_i, F) -> (B, INPUT_TDIM, F): padded/cropped log-mel, before normalisation
    raw_frames = torch.stack([unnormalised.pad_or_crop(unnormalised.frames(load_audio(p))) for p, _ in train_items])
    mean, std = norm_stats(raw_frames)
    frontend = unnormalised.config.replace(mean=mean, std=std)
    extractor = FeatureExtractor(frontend)
    log(f"      mean {mean:.4f}, std {std:.4f} (average of per-batch statistics, padding included)")
    x_train = extractor.normalize(raw_frames)
    y_train = torch.tensor([y for _, y in train_items])
    x_test = extractor([load_audio(p) for p, _ in test_items])
    y_test = torch.tensor([y for _, y in test_items])

    config = ASTConfig(model_size="tiny224", embed_dim=64, depth=2, num_heads=4, input_tdim=INPUT_TDIM,
                       fstride=10, tstride=10, num_classes=len(CLASSES))
    model = AST(config, frontend=frontend, labels=CLASSES, multi_label=False)
    params = sum(p.numel() for p in model.parameters())
    f_dim, t_dim = config.grid
    log(f"[3/5] training a tiny AST ({config.depth} blocks, width {config.embed_dim}, {f_dim}x{t_dim} patches, "
        f"{params / 1e3:.0f}k parameters) for up to {seconds_budget:g} s on CPU")
    start = time.perf_counter()
    epochs = train(model, x_train, y_train, seconds_budget=seconds_budget, seed=seed, log=log)
    train_seconds = time.perf_counter() - start

    with torch.inference_mode():
        predicted = model(x_test).argmax(dim=1)
    correct = int((predicted == y_test).sum())
    accuracy = correct / len(y_test)
    log(f"[4/5] test accuracy: {accuracy:.3f} ({correct}/{len(y_test)}; chance is {1 / len(CLASSES):.2f}) "
        f"after {epochs} epochs, {train_seconds:.1f} s of training")

    model_dir = save_model(model, out / "model")
    log(f"      saved the model to {model_dir} (ast_audio.load_model or `ast-audio tag --checkpoint` read it)")

    log("[5/5] tagging two test clips with the saved model:")
    tagger = Tagger(load_model(model_dir))
    examples = [test_items[0][0], test_items[-1][0]]
    for result, (path, label) in zip(tagger.tag(examples, top_k=2), (test_items[0], test_items[-1]), strict=True):
        tops = ", ".join(f"{name} {score:.3f}" for name, score in result.top)
        log(f"      {path.relative_to(out)} (true: {CLASSES[label]}): {tops}")
    return DemoResult(accuracy=accuracy, num_test=len(y_test), train_seconds=train_seconds, epochs=epochs,
                      data_dir=data_dir, model_dir=model_dir)
