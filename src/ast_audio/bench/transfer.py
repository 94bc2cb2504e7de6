"""Transfer bench: how well each fine-tuning mode learns a small task from a pre-trained AST.

There are no published weights on a machine without internet, so the transfer setting is generated: a small AST
is pre-trained from scratch on a source task (sound families: tones, up-chirps, noise bursts, click trains,
harmonic tones), then fine-tuned with each mode on a different target task whose 10 classes share those
low-level parts but not the labels (tone + clicks, chirp + noise, amplitude- and frequency-modulated tones, down
chirps, two-tone chords, beep sequences, noise-burst trains, plucks, chirp + clicks), with 8, 16 and 32 training
clips per class and several seeds (each seed draws other training clips and initialises the head differently).
Accuracy is measured on a fixed test set of the target task after the last epoch (no model selection on it).
"scratch" trains the same architecture from random weights on the target clips.

Every run goes through the training engine (`ast_audio.train.engine.run`) with the folder recipe, so the bench
measures what `ast-audio train --finetune MODE` does. Each mode runs in its own process, so its peak memory (the
peak resident set on CPU) is its own. Results do not depend on the machine's speed or load: fixed epoch counts, no
time budget, and every process on the demo's fixed torch thread count (`ast_audio.apps.demo.THREADS`).

    python -m ast_audio.bench.transfer --out runs/transfer            # the table of docs/training.md
    python -m ast_audio.bench.transfer --out /tmp/t --quick            # a smoke run: 1 seed, sizes 8, few epochs
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE

CLIP_S = 1.0
TARGET_LENGTH = 100  # frames: a 1 s clip fits one input
SOURCE_CLASSES = ("tone", "chirp_up", "noise_burst", "click_train", "harmonic")
TARGET_CLASSES = ("tone_clicks", "chirp_noise", "am_tone", "fm_tone", "chirp_down", "two_tones", "beeps",
                  "noise_train", "pluck", "chirp_clicks")
MODES = ("full", "linear", "last:2", "lora:4", "lora:16", "scratch")
SIZES = (8, 16, 32)
# The small AST: 96 wide, 4 blocks, non-overlapping 16 x 16 patches on 128 mel bins x 100 frames (8 x 6 tokens).
MODEL = {"embed_dim": 96, "depth": 4, "num_heads": 4}
STRIDE = 16
# lr of each mode, fixed before the measurement (not tuned on the test set): heads and adapters take larger steps
# than whole networks.
LR = {"full": 3e-4, "linear": 3e-3, "last:2": 5e-4, "lora:4": 1e-3, "lora:16": 1e-3, "scratch": 1e-3}


# ----------------------------------------------------------------------------------------------------------------
# Generated audio


def _tone(f: float, t: np.ndarray, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * f * t + phase)


def _chirp(f0: float, octaves: float, t: np.ndarray) -> np.ndarray:
    """Exponential chirp over `octaves` (negative: downwards) across t."""
    rate = octaves / max(t[-1], 1e-3)
    if abs(rate) < 1e-6:
        return _tone(f0, t)
    return np.sin(2 * np.pi * f0 * (np.exp2(rate * t) - 1) / (rate * math.log(2)))


def _clicks(n: int, period: int, rng: np.random.Generator) -> np.ndarray:
    length = int(0.003 * SAMPLE_RATE)
    click = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
    out = np.zeros(n)
    for start in range(0, n - length, period):
        out[start:start + length] += click
    return out / max(np.abs(out).max(), 1e-9)


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(n)
    if rng.random() < 0.5:  # a little colour: first-order low-pass
        alpha = rng.uniform(0.5, 0.9)
        x = np.convolve(x, (1 - alpha) * alpha ** np.arange(64))[:n]
    return x / max(np.abs(x).max(), 1e-9)


def _harmonic(f: float, t: np.ndarray, partials: int, rng: np.random.Generator) -> np.ndarray:
    return sum(_tone(f * k, t, rng.uniform(0, 6.3)) / k for k in range(1, partials + 1))


def _envelope(x: np.ndarray, fade: int = 160) -> np.ndarray:
    fade = min(fade, len(x) // 2)
    if fade:
        ramp = np.linspace(0, 1, fade)
        x[:fade] *= ramp
        x[len(x) - fade:] *= ramp[::-1]
    return x


def synth(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One 1 s clip of `kind` (a source or target class): (16000,) float32, peak below 1."""
    n = int(CLIP_S * SAMPLE_RATE)
    clip = rng.uniform(0.002, 0.02) * rng.standard_normal(n)
    onset = int(rng.uniform(0.0, 0.2) * SAMPLE_RATE)
    length = n - onset - int(rng.uniform(0.0, 0.15) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    f = float(np.exp(rng.uniform(np.log(200), np.log(2500))))
    if kind == "tone":
        event = _tone(f, t)
    elif kind == "chirp_up":
        event = _chirp(f / 2, rng.uniform(1.0, 2.5), t)
    elif kind == "chirp_down":
        event = _chirp(f, -rng.uniform(1.0, 2.5), t)
    elif kind == "noise_burst":
        length = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
        event = _noise(length, rng)
    elif kind == "click_train":
        event = _clicks(length, int(rng.uniform(0.015, 0.08) * SAMPLE_RATE), rng)
    elif kind == "harmonic":
        event = _harmonic(f / 2, t, int(rng.integers(3, 7)), rng)
    elif kind == "tone_clicks":
        event = 0.6 * _tone(f, t) + 0.6 * _clicks(length, int(rng.uniform(0.02, 0.08) * SAMPLE_RATE), rng)
    elif kind == "chirp_noise":
        event = 0.6 * _chirp(f / 2, rng.uniform(1.0, 2.0), t) + 0.4 * _noise(length, rng)
    elif kind == "chirp_clicks":
        event = 0.6 * _chirp(f / 2, rng.uniform(1.0, 2.0), t) + 0.6 * _clicks(
            length, int(rng.uniform(0.02, 0.08) * SAMPLE_RATE), rng)
    elif kind == "am_tone":
        event = _tone(f, t) * (0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(4, 12) * t))
    elif kind == "fm_tone":
        depth, rate = rng.uniform(0.03, 0.08), rng.uniform(4, 10)
        event = np.sin(2 * np.pi * f * t + depth * f / rate * np.sin(2 * np.pi * rate * t))
    elif kind == "two_tones":
        event = 0.5 * _tone(f, t) + 0.5 * _tone(f * rng.choice([1.25, 1.5, 2.0]), t)
    elif kind == "beeps":
        event = np.zeros(length)
        beep = int(0.08 * SAMPLE_RATE)
        for start in np.linspace(0, length - beep, int(rng.integers(3, 6))).astype(int):
            event[start:start + beep] = _envelope(_tone(f, t[:beep]), 80)
    elif kind == "noise_train":
        event = np.zeros(length)
        burst = int(0.06 * SAMPLE_RATE)
        for start in np.linspace(0, length - burst, int(rng.integers(3, 6))).astype(int):
            event[start:start + burst] = _envelope(_noise(burst, rng), 40)
    elif kind == "pluck":
        event = _harmonic(f / 2, t, 4, rng) * np.exp(-t / rng.uniform(0.08, 0.25))
    else:
        raise ValueError(f"unknown class {kind!r}")
    event = _envelope(np.asarray(event, dtype=np.float64)) / max(np.abs(event).max(), 1e-9)
    clip[onset:onset + len(event)] += rng.uniform(0.1, 0.5) * event
    return clip.astype(np.float32)


def write_task(folder: Path, classes: tuple[str, ...], per_class: int, seed: int) -> list[tuple[str, str]]:
    """folder/<class>/<class>_<i>.wav, per_class clips each; returns (relative path, class) rows."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rows = []
    for kind in classes:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            name = f"{kind}/{kind}_{i:03d}.wav"
            sf.write(str(folder / name), synth(kind, rng), SAMPLE_RATE, subtype="PCM_16")
            rows.append((name, kind))
    return rows


def write_manifest(path: Path, root: Path, rows: list[tuple[str, str]]) -> Path:
    """A path,label CSV of the clips `rows` (paths relative to `root`) at `path`. Its paths are written relative to
    the manifest's own folder, which is how the folder layout resolves them (whatever the working directory)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([(Path(os.path.relpath(root / p, path.parent)).as_posix(), label) for p, label in rows])
    return path


# ----------------------------------------------------------------------------------------------------------------
# Runs


def _config(data: Path, eval_data: Path, *, epochs: int, lr: float, seed: int, stats: tuple[float, float],
            init: str = "none", finetune: str = "full", lora_rank: int = 8):
    from ..train.recipes import make_recipe

    changes: dict[str, Any] = {} if init != "none" else {"model_config": MODEL}
    return make_recipe("folder", data=str(data), eval_data=str(eval_data), epochs=epochs, batch_size=16, lr=lr,
                       seed=seed, init=init, finetune=finetune, lora_rank=lora_rank,
                       lora_targets=("qkv", "proj", "fc1", "fc2"), target_length=TARGET_LENGTH, fstride=STRIDE,
                       tstride=STRIDE, mean=stats[0], std=stats[1], freqm=0, timem=0, selection="last",
                       lr_scheduler_start=1000, device="cpu", num_workers=0, tensorboard=False, progress=False,
                       **changes)


def prepare(out: Path, sizes: tuple[int, ...], seeds: int, test_per_class: int, source_per_class: int,
            source_epochs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Generate both tasks, pre-train the source model; returns what the mode workers need (also in plan.json)."""
    from ..train.data import ClipDataset
    from ..train.engine import run
    from ..train.layouts import load_splits
    from ..train.stats import norm_stats

    data = out / "data"
    pool = max(sizes)
    log(f"generating the source task ({len(SOURCE_CLASSES)} classes x {source_per_class} clips) and the target "
        f"task ({len(TARGET_CLASSES)} classes x {pool} + {pool // 2 * (seeds - 1)} training and {test_per_class} "
        "test clips)")
    src_rows = write_task(data / "source", SOURCE_CLASSES, source_per_class, seed=1)
    src_valid = write_task(data / "source_valid", SOURCE_CLASSES, 10, seed=2)
    extra = pool // 2 * (seeds - 1)  # each seed draws its own clips from a pool a little larger than the biggest set
    tgt_rows = write_task(data / "target", TARGET_CLASSES, pool + extra, seed=3)
    test_rows = write_task(data / "target_test", TARGET_CLASSES, test_per_class, seed=4)
    test = write_manifest(data / "target_test.csv", data / "target_test", test_rows)
    source = write_manifest(data / "source.csv", data / "source", src_rows)
    source_valid = write_manifest(data / "source_valid.csv", data / "source_valid", src_valid)
    from ..config import FrontendConfig

    splits = load_splits("folder", source, eval_data=str(source_valid))
    stats = norm_stats(ClipDataset(splits.train, FrontendConfig(target_length=TARGET_LENGTH), normalize=False),
                       batch_size=64, seed=0)
    log(f"normalisation of the source clips: mean {stats.mean:.3f}, std {stats.std:.3f}")
    trains: dict[str, str] = {}
    for size in sizes:
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            rows = []
            for kind in TARGET_CLASSES:
                mine = [r for r in tgt_rows if r[1] == kind]
                rows += [mine[i] for i in sorted(rng.choice(len(mine), size, replace=False))]
            trains[f"{size}/{seed}"] = str(write_manifest(data / f"target_{size}_{seed}.csv", data / "target", rows))
    log(f"pre-training the source model ({MODEL['embed_dim']} wide, {MODEL['depth']} blocks) for {source_epochs} "
        "epochs")
    started = time.perf_counter()
    cfg = _config(source, source_valid, epochs=source_epochs, lr=1e-3, seed=0, stats=(stats.mean, stats.std))
    result = run(cfg, out / "source_run", printer=lambda m: None)
    source_s = time.perf_counter() - started
    log(f"  source accuracy {result.rows[-1]['acc']:.3f} on held-out source clips, {source_s:.0f} s"
        + _chance_note(result.rows[-1]["acc"], len(src_valid), len(SOURCE_CLASSES)))
    plan = {"stats": [stats.mean, stats.std], "source_model": str(out / "source_run" / "model"), "test": str(test),
            "trains": trains, "sizes": list(sizes), "seeds": seeds, "test_per_class": test_per_class,
            "source_acc": result.rows[-1]["acc"], "source_seconds": source_s}
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan


def run_mode(out: Path, mode: str, epochs: int) -> dict[str, Any]:
    """Every size and seed of one mode (in this process: its peak memory is the mode's); writes mode_<m>.json."""
    import torch

    from ..train.engine import run
    from ..train.finetune import peak_memory_mb

    plan = json.loads((out / "plan.json").read_text())
    runs = []
    for size in plan["sizes"]:
        for seed in range(plan["seeds"]):
            kind, _, rank = mode.partition(":")
            init = "none" if mode == "scratch" else f"checkpoint:{plan['source_model']}"
            finetune = {"scratch": "full", "lora": "lora"}.get(kind, mode)
            cfg = _config(Path(plan["trains"][f"{size}/{seed}"]), Path(plan["test"]), epochs=epochs, lr=LR[mode],
                          seed=seed, stats=tuple(plan["stats"]), init=init, finetune=finetune,
                          lora_rank=int(rank) if kind == "lora" else 8)
            torch.manual_seed(seed)
            started = time.perf_counter()
            folder = out / "runs" / f"{mode.replace(':', '_')}_{size}_{seed}"
            result = run(cfg, folder, printer=lambda m: None)
            info = json.loads((folder / "result.json").read_text())["finetune"]
            runs.append({"size": size, "seed": seed, "acc": result.rows[-1]["acc"],
                         "seconds": time.perf_counter() - started, "step_s": info["step_s"],
                         "trainable": info["trainable_parameters"], "parameters": info["parameters"]})
            print(f"{mode} {size}/class seed {seed}: acc {runs[-1]['acc']:.3f} in {runs[-1]['seconds']:.1f} s"
                  + _chance_note(runs[-1]["acc"], len(TARGET_CLASSES) * plan["test_per_class"], len(TARGET_CLASSES)),
                  file=sys.stderr, flush=True)
    summary = {"mode": mode, "runs": runs, "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}
    (out / f"mode_{mode.replace(':', '_')}.json").write_text(json.dumps(summary, indent=2))
    return summary


def _chance_note(accuracy: float, total: int, num_classes: int) -> str:
    """"; warning: near chance ..." to add to a run's line when guessing could have scored `accuracy` on `total`
    clips (`ast_audio.apps.demo.near_chance`), else ""."""
    from ..apps.demo import near_chance

    if not near_chance(round(accuracy * total), total, num_classes):
        return ""
    return f"; warning: near chance ({1 / num_classes:.2f} on {total} clips): this model learned nothing measurable"


def table(out: Path, modes: tuple[str, ...]) -> str:
    """The markdown table of the finished modes."""
    plan = json.loads((out / "plan.json").read_text())
    sizes = plan["sizes"]
    head = ("| mode | trainable params | " + " | ".join(f"acc @ {s}/class" for s in sizes)
            + f" | s per run @ {sizes[-1]} | ms per step | peak RSS MB |")
    lines = [head, "|" + "---|" * (5 + len(sizes))]
    for mode in modes:
        path = out / f"mode_{mode.replace(':', '_')}.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        runs = summary["runs"]
        cells = []
        for size in sizes:
            accs = [r["acc"] for r in runs if r["size"] == size]
            cells.append(f"{np.mean(accs):.3f} ({min(accs):.2f}-{max(accs):.2f})")
        big = [r for r in runs if r["size"] == sizes[-1]]
        name = {"lora:4": "lora r4", "lora:16": "lora r16"}.get(mode, mode)
        seconds, step_ms = np.mean([r["seconds"] for r in big]), 1000 * np.mean([r["step_s"] for r in big])
        lines.append(f"| {name} | {runs[0]['trainable']:,} | " + " | ".join(cells)
                     + f" | {seconds:.1f} | {step_ms:.1f} | {summary['peak_memory_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (every mode)")
    parser.add_argument("--source-epochs", type=int, default=25)
    parser.add_argument("--source-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 8 clips/class, 2 epochs")
    parser.add_argument("--worker", metavar="MODE", help=argparse.SUPPRESS)  # one mode, in its own process
    args = parser.parse_args(argv)
    from ..apps.demo import THREADS, fixed_threads

    with fixed_threads(THREADS):  # in the workers too: every process of the bench on the same thread count
        return _main(parser, args, THREADS)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, threads: int) -> int:
    if args.quick:
        args.seeds, args.sizes, args.epochs, args.source_epochs, args.source_per_class = 1, "8", 2, 2, 16
        args.test_per_class = 4
    if args.worker:
        run_mode(args.out, args.worker, args.epochs)
        return 0
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {','.join(MODES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"every process on {threads} torch thread(s) (fixed: results do not depend on the load)")
    began = time.perf_counter()
    prepare(args.out, tuple(int(s) for s in args.sizes.split(",")), args.seeds, args.test_per_class,
            args.source_per_class, args.source_epochs, print)
    for mode in modes:
        cmd = [sys.executable, "-m", "ast_audio.bench.transfer", "--out", str(args.out), "--worker", mode,
               "--epochs", str(args.epochs)]
        subprocess.run(cmd, check=True, env=os.environ.copy())
    text = table(args.out, modes)
    (args.out / "transfer.md").write_text(text + "\n")
    print(text)
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
