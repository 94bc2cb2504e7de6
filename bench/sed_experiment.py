"""Clip model vs frame model on generated scenes in the harder conditions (issue 20), end to end from nothing.

    OMP_NUM_THREADS=1 .venv/bin/python bench/sed_experiment.py [-o WORKDIR] [--small | --preset NAME] [--demo-model DIR]
    OMP_NUM_THREADS=1 .venv/bin/python bench/sed_experiment.py --sweep MODEL SCENES   # detection settings

Every step runs the real CLI with fixed seeds and `THREADS` torch/BLAS threads (numbers do not depend on the
machine's load; nothing stops on a time budget), in a fresh WORKDIR (default ./sed-experiment):

1. `ast-audio demo`: the demo's clip model (its fixed 40 epochs; the budget is set out of reach), unless
   `--demo-model` names one;
2. `ast-audio scenes` in the harder conditions (`HARD`: a background swelling by up to 12 dB, sounds 0-10 dB above
   the background under them, a third starting inside the one before): held-out test scenes, training scenes and
   their `validation/` scenes, each with its own seed;
3. `ast-audio train --recipe sed` on the training scenes, initialised from the demo model (its front end: input
   length and normalisation), with the recipe's defaults but `TRAIN_SETTINGS` and the preset's epochs;
4. the clip model: `ast-audio events` with its defaults, then `ast-audio eval-events`;
5. the frame model, and as a reference the demo model with an untrained frame head (what training starts from):
   `ast-audio events` with its defaults too (for a frame model: one pass per window, hop = window, the frame scores
   stitched on one gapless grid, the frame rule `ast_audio.infer.names.FRAME_DETECTION`, no energy refinement; the
   score tables are the columns), then `ast-audio eval-events`;
6. the table: event F1, segment F1 (sed_eval, collar 0.2 s / 20 %, 1 s segments), PSDS1 and passes per second of
   audio, printed and written to WORKDIR/results.json.

`--preset full240` is `full` with twice the training scenes (240). `--sweep` prints event/segment F1 of detection
settings on a scenes folder (the validation scenes chose the frame rule, `FRAME_DETECTION`; never the test scenes).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ast_audio.infer.names import FRAME_DETECTION  # torch-free: events' default rule for frame models

THREADS = 1
CLI = str(Path(sys.executable).with_name("ast-audio"))
HARD = ["--swell", "12", "--snr", "0", "10", "--overlap", "0.33"]  # issue 20's harder conditions (docs/events.md)
# The training run's settings beyond the sed recipe's defaults, for the demo's tiny model (64 wide, 2 blocks, 2 s
# input): the demo's own order of learning rate (its schedule uses 5e-4 where the folder recipe has 1e-4), and no
# mixup or masks (with the few steps of this experiment they slowed learning: docs/events.md).
TRAIN_SETTINGS = ["--lr", "1e-3", "--set", "mixup=0", "--set", "freqm=0", "--set", "timem=0"]
# Sizes: test scenes (count, seconds), training scenes, validation scenes, training epochs; seeds are fixed below.
PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(test=(3, 120), train=(120, 20), valid=(6, 20), epochs=30),
    "full240": dict(test=(3, 120), train=(240, 20), valid=(6, 20), epochs=30),  # twice the training scenes
    "small": dict(test=(2, 20), train=(100, 20), valid=(2, 10), epochs=6),
}
SEEDS = dict(test=101, train=100, valid=102, train_run=0, head=0, demo=0)


def environment() -> dict[str, str]:
    threads = str(THREADS)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def cli(*args: Any, log: Path | None = None) -> None:
    """Run `ast-audio ARGS` (its output to `log` when given); exit with its message if it fails."""
    command = [CLI, *(str(a) for a in args)]
    print("$ ast-audio " + " ".join(str(a) for a in args), flush=True)
    started = time.perf_counter()
    with open(log, "w") if log is not None else open(os.devnull, "w") as sink:
        proc = subprocess.run(command, env=environment(), stdout=sink if log else None, stderr=subprocess.STDOUT
                              if log else None)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}" + (f"; see {log}" if log else ""))
    print(f"  {time.perf_counter() - started:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Events and their cost


def events_of(model_dir: Path, files: list[Path], out: Path) -> None:
    """`ast-audio events` of `model_dir` (a clip or frame model) with its defaults on `files`: out/events.tsv (DCASE),
    out/scores/ (the score tables: a frame model's columns) and out/durations.tsv."""
    out.mkdir(parents=True, exist_ok=True)
    cli("events", *files, "--checkpoint", model_dir, "--format", "dcase", "-o", out / "events.tsv",
        "--durations", out / "durations.tsv", "--scores-dir", out / "scores", "--no-progress")


def frame_passes(model_dir: Path, files: list[Path]) -> dict[str, float]:
    """Model passes of `ast-audio events` with a frame model's default windows (hop = window) on `files`: the
    windows `ast_audio.infer.frames.frame_windows` places on each file's grid of frame columns."""
    from ast_audio.audio.io import load_audio_info
    from ast_audio.config import column_hop_samples
    from ast_audio.infer.frames import frame_windows, grid_columns
    from ast_audio.weights.checkpoint import load_model

    model = load_model(model_dir)
    column, t_dim = column_hop_samples(model.config, model.frontend), model.config.grid[1]
    passes, seconds = 0, 0.0
    for path in files:
        info = load_audio_info(path)
        columns = grid_columns(round(info.duration_s * model.frontend.sample_rate), column)
        passes += len(frame_windows(columns, t_dim, t_dim))
        seconds += info.duration_s
    return {"passes": passes, "seconds": seconds}


def clip_passes(model_dir: Path, files: list[Path]) -> dict[str, float]:
    """Model passes of `ast-audio events` with a clip model's default window and hop on `files` (the windows that
    `ast_audio.infer.stream.window_starts` places)."""
    from ast_audio.audio.io import load_audio_info
    from ast_audio.infer.windowing import event_windowing
    from ast_audio.weights.checkpoint import load_model

    model = load_model(model_dir)
    windowing = event_windowing(model)
    passes, seconds = 0, 0.0
    for path in files:
        info = load_audio_info(path)
        passes += windowing.count(round(info.duration_s * windowing.rate))
        seconds += info.duration_s
    return {"passes": passes, "seconds": seconds}


def untrained_frame_model(demo_model: Path, sed_run: Path, out: Path) -> None:
    """The demo model with the frame head the sed run trained, freshly initialised (seed `SEEDS["head"]`): where
    training starts from, the reference a trained frame model must beat."""
    import torch

    from ast_audio.train.sed import with_frame_head
    from ast_audio.weights.checkpoint import load_model, save_model

    head = load_model(sed_run / "model").config.frame_head
    torch.manual_seed(SEEDS["head"])
    save_model(with_frame_head(load_model(demo_model), head), out)


# ----------------------------------------------------------------------------------------------------------------------
# The experiment


def evaluate(truth: Path, folder: Path) -> dict[str, Any]:
    """`ast-audio eval-events` of folder/events.tsv and folder/scores against `truth` -> its JSON."""
    cli("eval-events", "--truth", truth, "--pred", folder / "events.tsv", "--scores-dir", folder / "scores",
        "--durations", folder / "durations.tsv", "--json", folder / "eval.json", log=folder / "eval.txt")
    return json.loads((folder / "eval.json").read_text())


def row(name: str, result: dict[str, Any], cost: dict[str, float]) -> dict[str, Any]:
    return {"model": name, "event_f1": result["event_f1"], "segment_f1": result["segment_f1"],
            "psds1": result["psds1"], "psds2": result["psds2"], "event_precision": result["event_precision"],
            "event_recall": result["event_recall"], "passes_per_s": cost["passes"] / cost["seconds"]}


def run(work: Path, preset: dict[str, Any], demo_model: Path | None) -> list[dict[str, Any]]:
    from ast_audio.weights.checkpoint import load_model

    started = time.perf_counter()
    if demo_model is None:
        cli("demo", "-o", work / "demo", "--seed", SEEDS["demo"], "--seconds-budget", 100000, log=work / "demo.log")
        demo_model = work / "demo" / "model"
    for name, folder in (("test", work / "test"), ("train", work / "train"), ("valid", work / "train" / "validation")):
        count, seconds = preset[name]
        cli("scenes", folder, "--count", count, "--seconds", seconds, *HARD, "--seed", SEEDS[name])
    frontend = load_model(demo_model).frontend  # the sed run keeps the demo model's input and normalisation
    cli("train", "--recipe", "sed", "--data", work / "train", "--init", f"checkpoint:{demo_model}", "-o", work / "sed",
        "--target-length", frontend.target_length, "--set", f"mean={frontend.mean}", "--set", f"std={frontend.std}",
        "--epochs", preset["epochs"], *TRAIN_SETTINGS, "--seed", SEEDS["train_run"], "--num-workers", 0,
        "--no-progress", "--set", "tensorboard=false", log=work / "train.log")
    files = sorted((work / "test").glob("scene_*.wav"))
    truth = work / "test" / "strong.tsv"
    events_of(demo_model, files, work / "clip")
    rows = [row("clip model (demo), `events` defaults", evaluate(truth, work / "clip"), clip_passes(demo_model, files))]
    untrained_frame_model(demo_model, work / "sed", work / "untrained" / "model")
    for name, model, folder in (("frame model, untrained head, `events` defaults", work / "untrained" / "model",
                                 work / "untrained" / "eval"),
                                ("frame model (`train --recipe sed`), `events` defaults", work / "sed" / "model",
                                 work / "frame")):
        events_of(model, files, folder)
        rows.append(row(name, evaluate(truth, folder), frame_passes(model, files)))
    summary = {"rows": rows, "preset": preset, "seeds": SEEDS, "threads": THREADS,
               "frame_detection": dataclasses.asdict(FRAME_DETECTION), "wall_s": time.perf_counter() - started}
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"  # None: not computable (e.g. F1 with no event found)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | event F1 | P / R | segment F1 | PSDS1 | PSDS2 | passes per s of audio |", "|---" * 7 + "|"]
    for r in rows:
        values = [_show(r[k]) for k in ("event_f1", "event_precision", "event_recall", "segment_f1", "psds1", "psds2")]
        lines.append(f"| {r['model']} | {values[0]} | {values[1]} / {values[2]} | {' | '.join(values[3:])} | "
                     f"{r['passes_per_s']:.2f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Detection settings


def sweep(model_dir: Path, scenes: Path) -> None:
    """Event/segment F1 (sed_eval) of frame-model detection settings on a scenes folder."""
    import torch

    from ast_audio.infer.evaluate_events import read_durations, read_truth, sed_eval_f1
    from ast_audio.infer.events import EventConfig, detect_events
    from ast_audio.infer.pipeline import EventPipeline
    from ast_audio.infer.tagger import Tagger
    from ast_audio.weights.checkpoint import load_model

    torch.set_num_threads(THREADS)
    pipeline = EventPipeline(Tagger(load_model(model_dir)))  # the frame scores `events` detects on
    truth, durations = read_truth(scenes / "strong.tsv"), read_durations(scenes / "durations.tsv")
    timelines = {f.stem: pipeline.score(f).timeline for f in sorted(scenes.glob("scene_*.wav"))}
    grid = itertools.product((0.4, 0.5, 0.6), (0.5, 1.0), (1, 3, 5, 7), (0.0, 0.2), (0.0, 0.2))
    for threshold, hysteresis, median, min_duration, gap in grid:
        config = EventConfig(threshold=threshold, hysteresis=hysteresis, median_windows=median,
                             min_duration_s=min_duration, merge_gap_s=gap, grid="mean", interpolate=True,
                             refine="none")
        pred = {k: [(e.onset_s, e.offset_s, e.label) for e in detect_events(t, config)] for k, t in timelines.items()}
        r = sed_eval_f1({k: truth.get(k, []) for k in timelines}, pred, durations)
        print(f"threshold {threshold} hysteresis {hysteresis} median {median} min_duration {min_duration} gap {gap}: "
              f"event F1 {r['event_f1']:.3f} segment F1 {r['segment_f1']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("sed-experiment"), help="work folder (replaced)")
    parser.add_argument("--small", action="store_true", help="the small preset (tiny scenes, 6 epochs): the test's")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a preset by name (default: full, or small)")
    parser.add_argument("--demo-model", type=Path, help="use this demo model instead of training one")
    parser.add_argument("--sweep", nargs=2, type=Path, metavar=("MODEL", "SCENES"),
                        help="print detection settings' event/segment F1 on SCENES with the frame model MODEL")
    args = parser.parse_args()
    if args.sweep:
        sweep(*args.sweep)
        return
    if args.output.exists():
        shutil.rmtree(args.output)
    args.output.mkdir(parents=True)
    rows = run(args.output, PRESETS[args.preset or ("small" if args.small else "full")], args.demo_model)
    print(table(rows))


if __name__ == "__main__":
    main()
