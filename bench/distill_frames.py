"""Frame distillation (issue 22): a frame teacher (`train --recipe sed`, bench/sed_experiment.py) distilled without
labels into a frame student; event F1 of both on the held-out test scenes.

    OMP_NUM_THREADS=1 python bench/distill_frames.py SED_WORK WORK [--scenes 240] [--views 4] [--epochs 60]
        [--student JSON] [--logits-only | --evaluate-only]

SED_WORK is a finished `bench/sed_experiment.py` folder (its frame model SED_WORK/sed/model is the teacher, its
SED_WORK/test scenes and strong labels the held-out evaluation). In WORK:

1. `ast-audio scenes` of new unlabelled scenes (the harder conditions, seed 103: neither the teacher's training nor
   its test scenes), cut into clips of the teacher's input length (2 s; their labels are never read);
2. `ast-audio distill logits` of the teacher on them (clip probabilities and frame scores, --views views);
3. `ast-audio train --recipe distill` of a frame student (`STUDENT`: 16x16 patches at stride 16 in frequency and 10
   in time, the teacher's 0.1 s columns; half the width, a smaller BiGRU frame head), validated label-free against
   the teacher's view 0;
4. both models through sed_experiment's frame path (hop = window, `FRAME_DETECTION`) and `ast-audio eval-events` on
   SED_WORK/test: event F1, segment F1, PSDS1, parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from sed_experiment import FRAME_DETECTION, HARD, cli, evaluate, frame_events, row  # noqa: E402

# time stride 10: the teacher's 0.1 s columns (stride 16 gave 0.16 s columns and coarser event boundaries)
STUDENT = {"embed_dim": 32, "depth": 2, "num_heads": 4, "fstride": 16, "tstride": 10,
           "frame_head": {"freq_pool": "mean", "temporal": "bigru", "temporal_layers": 1, "hidden": 64,
                          "weak_pool": "linear_softmax"}}
UNLABELLED_SEED = 103


def cut_clips(scenes: Path, out: Path, seconds: float) -> int:
    """Every scene_*.wav of `scenes` cut into consecutive clips of `seconds` (the last partial one dropped)."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(scenes.glob("scene_*.wav")):
        audio, rate = sf.read(str(path), dtype="float32")
        n = int(round(seconds * rate))
        for i in range(len(audio) // n):
            sf.write(str(out / f"{path.stem}_{i:03d}.wav"), audio[i * n:(i + 1) * n], rate, subtype="PCM_16")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sed_work", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--scenes", type=int, default=240)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--student", type=json.loads, default=STUDENT, help="the student's ASTConfig fields (JSON)")
    parser.add_argument("--logits-only", action="store_true", help="stop after the teacher's outputs")
    parser.add_argument("--evaluate-only", action="store_true", help="report on the student already trained")
    args = parser.parse_args()
    from ast_audio.weights.checkpoint import load_model

    w, teacher = args.work, args.sed_work / "sed" / "model"
    w.mkdir(parents=True, exist_ok=True)
    if not (w / "logits" / "index.json").exists():  # steps 1-2 once (a rerun goes on with the student)
        cli("scenes", w / "scenes", "--count", args.scenes, "--seconds", 20, *HARD, "--seed", UNLABELLED_SEED)
        clips = cut_clips(w / "scenes", w / "clips", load_model(teacher).frontend.duration_s)
        print(f"{clips} unlabelled clips", flush=True)
        cli("distill", "logits", "--teacher", teacher, "--data", w / "clips", "--views", args.views, "--top-k", 20,
            "--num-workers", 0, "--no-progress", "--force", "-o", w / "logits")
    if args.logits_only:
        return
    if not args.evaluate_only:
        cli("train", "--recipe", "distill", "--logits", w / "logits", "--student", json.dumps(args.student), "--epochs",
            args.epochs, "--batch-size", 16, "--lr", "1e-3", "--set", f"lr_scheduler_start={args.epochs // 2}",
            "--num-workers", 0, "--device", "cpu", "--no-progress", "--force", "--set", "tensorboard=false",
            "-o", w / "student", log=w / "student.log")
    files = sorted((args.sed_work / "test").glob("scene_*.wav"))
    truth = args.sed_work / "test" / "strong.tsv"
    rows = []
    for name, model in (("teacher (sed)", teacher), ("student (distilled)", w / "student" / "model")):
        folder = w / ("eval_" + name.split()[0])
        cost = frame_events(model, files, folder, FRAME_DETECTION)
        rows.append({**row(name, evaluate(truth, folder), cost),
                     "parameters": sum(p.numel() for p in load_model(model).parameters())})
    summary = {"rows": rows, "event_f1_gap": rows[0]["event_f1"] - rows[1]["event_f1"], "student": args.student,
               "views": args.views, "epochs": args.epochs, "detection": FRAME_DETECTION}
    (w / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
