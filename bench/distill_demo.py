"""Distillation on the demo classes, without labels (the measurement of docs/training.md, issue 22).

1. Labelled demo clips (W/data, `ast_audio.apps.demo.make_dataset`), and the teacher trained on them (`train --recipe
   folder`: the demo's 64-wide 2-block model at 64 mel bins).
2. Other draws of the demo classes (seeds 1..--draws), their train/ folders used as unlabelled audio (labels
   ignored; 340 clips per draw).
3. `ast-audio distill logits` with the teacher on that folder; `ast-audio train --recipe distill` of a student
   (label-free validation: held-out clips scored against the teacher's plain answer).
4. Held-out mAP of teacher and student on the demo's labelled test split, the top-1 agreement of the two on its
   clips with a class, parameters and GFLOP per input of each, storage per clip-view.

Usage: OMP_NUM_THREADS=1 python bench/distill_demo.py WORKDIR [--draws 6] [--views 8] [--teacher-epochs 15]
           [--epochs 100] [--decay-from 40] [--decay 0.95] [--holdout 0.1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from ast_audio.apps.demo import make_dataset
from ast_audio.bench.timing import ast_flops
from ast_audio.train.evaluate import evaluate_checkpoints
from ast_audio.train.layouts import load_splits
from ast_audio.train.logits import load_logits, storage_bytes
from ast_audio.weights.checkpoint import load_model

# The demo's model (64 wide, 2 blocks, stride 10) at 64 mel bins is the teacher; the student is half as wide with
# 16x16 patches at stride 16 (4x12 = 48 tokens per 2 s input instead of 5x19 = 95).
TEACHER = '{"embed_dim": 64, "depth": 2, "num_heads": 4}'
STUDENT = '{"embed_dim": 32, "depth": 2, "num_heads": 4}'


def sh(*args: object) -> float:
    """Run an ast-audio command (printed), return its seconds."""
    command = [sys.executable, "-m", "ast_audio", *map(str, args)]
    print("$ ast-audio " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


@torch.no_grad()
def top1_agreement(teacher, student, manifest) -> float:
    from ast_audio.train.data import ClipDataset

    data = ClipDataset(manifest, teacher.frontend, None)
    agree = 0
    for i in range(len(data)):
        x = data[i][0].unsqueeze(0)
        agree += int(teacher(x).argmax() == student(x).argmax())
    return agree / len(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--draws", type=int, default=6, help="unlabelled draws of the demo classes (340 clips each)")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--decay-from", type=int, default=40, help="the student's lr decays from this epoch")
    parser.add_argument("--decay", type=float, default=0.95, help="the student's lr factor per epoch")
    parser.add_argument("--holdout", type=float, default=0.1, help="stored clips held out for label-free validation")
    parser.add_argument("--evaluate-only", action="store_true", help="report on the runs already in WORKDIR")
    parser.add_argument("--student-out", default="student", help="the student run's folder in WORKDIR")
    args = parser.parse_args()
    w = args.work
    data = w / "data"
    times = {} if args.evaluate_only else run_all(w, data, args)
    report(w, data, times, w / args.student_out)


def run_all(w: Path, data: Path, args: argparse.Namespace) -> dict[str, float]:
    make_dataset(data, seed=0)  # labelled: the teacher's training clips and the held-out test split
    unlabelled = unlabelled_list(w, args.draws)  # other draws; their train/ folders are used without labels
    times = {"teacher": sh("train", "--recipe", "folder", "--data", data / "train.csv", "--eval-data",
                           data / "test.csv", "--labels", data / "class_labels_indices.csv", "--init", "none",
                           "--model-config", TEACHER, "--target-length", 200, "--set", "num_mel_bins=64", "--set",
                           "mean=-3.9", "--set", "std=3.7", "--set", "freqm=0", "--set", "timem=0", "--set",
                           "selection=last", "--epochs", args.teacher_epochs, "--batch-size", 16, "--lr", "1e-3",
                           "--num-workers", 1, "--device", "cpu", "--no-progress", "--force", "--set",
                           "tensorboard=false", "-o", w / "teacher")}
    times["logits"] = sh("distill", "logits", "--teacher", w / "teacher" / "model", "--data", unlabelled, "--views",
                         args.views, "--top-k", 20, "--num-workers", 1, "--no-progress", "--force", "-o", w / "logits")
    times["student"] = sh("train", "--recipe", "distill", "--logits", w / "logits", "--student", STUDENT,
                          "--epochs", args.epochs, "--batch-size", 16, "--lr", "1e-3", "--set",
                          f"lr_scheduler_start={args.decay_from}", "--set", f"lr_scheduler_decay={args.decay}",
                          "--set", f"holdout={args.holdout}", "--num-workers", 1, "--device", "cpu",
                          "--no-progress", "--force", "--set", "tensorboard=false", "-o", w / "student")
    return times


def unlabelled_list(w: Path, draws: int) -> Path:
    """Draws 1..`draws` of the demo classes (W/unlabelled, W/unlabelled2, ...); the list of their training clips."""
    files = []
    for seed in range(1, draws + 1):
        folder = w / ("unlabelled" if seed == 1 else f"unlabelled{seed}")
        make_dataset(folder, seed=seed)
        files += sorted(str(p.relative_to(w)) for p in (folder / "train").rglob("*.wav"))
    listing = w / "unlabelled.txt"  # paths relative to the list's folder, as --data LIST reads them
    listing.write_text("\n".join(files) + "\n")
    return listing


def report(w: Path, data: Path, times: dict[str, float], student_run: Path) -> None:
    common = dict(layout="folder", data=str(data / "test.csv"), eval_data=str(data / "test.csv"),
                  label_csv=str(data / "class_labels_indices.csv"), split="valid", device="cpu")
    result = {}
    for name, ckpt in (("teacher", w / "teacher" / "model"), ("student", student_run / "model")):
        result[name] = evaluate_checkpoints([str(ckpt)], **common)["mAP"]
    teacher, student = load_model(w / "teacher" / "model"), load_model(student_run / "model")
    held = load_splits("folder", data / "test.csv", eval_data=str(data / "test.csv"),
                       label_csv=str(data / "class_labels_indices.csv")).valid
    with_class = held.subset(i for i, e in enumerate(held.examples) if e.targets)
    stored = load_logits(w / "logits")
    clip_views = len(stored.clip) * stored.views
    summary = {
        "teacher_mAP": result["teacher"], "student_mAP": result["student"],
        "ratio": result["student"] / result["teacher"],
        "top1_agreement": top1_agreement(teacher, student, with_class),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_gflop": ast_flops(teacher.config)["total"] / 1e9,
        "student_gflop": ast_flops(student.config)["total"] / 1e9,
        "clips": len(stored.clip), "views": stored.views,
        "bytes_per_clip_view": storage_bytes(w / "logits") / clip_views,
        "seconds": times,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
