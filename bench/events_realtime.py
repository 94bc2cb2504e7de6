"""Real-time factor of event detection on long audio: a clip model with the clip defaults against a frame model, in
one run, through the one pipeline (`ast_audio.infer.pipeline.EventPipeline`, what `ast-audio events` runs), with
the precision auto picks on this CPU.

    .venv/bin/python bench/events_realtime.py [--minutes 10] [--precision auto] [--checkpoint C] [--json OUT]
    .venv/bin/python bench/events_realtime.py --minutes 60 --frame-only --student mini [--mel-bins 64]

It writes a generated recording of --minutes minutes (16 kHz FLAC: tones, chirps and noise bursts over background
noise) and times `EventPipeline.run` on it (decoding, resampling, fbank, model, stitching, detection; the model is
loaded and its ONNX Runtime graph built before the clock starts) for:

1. the clip model with the clip defaults (windows of half its input every tenth of that, energy refinement);
2. the same clip model with window = hop = its input (each sample scored once), for reference;
3. the frame model with the frame defaults (windows of its input, hop = window, no refinement).

Without --checkpoint the clip model is random AST-base384 weights and the frame model the same network with a
frame head (`FrameHeadConfig()`), random too (the speed does not depend on the values). It prints each run's wall
time, passes and real-time factor with the CPU line and what auto picked, then the ratio frame / clip defaults
(issue 20's target: >= 10x). `--student tiny|mini|small` makes the frame model a random distillation student of that
size with the frame head (16x16 patches at stride 16, AST-base384's 1024 frames, `--mel-bins` 128 or CED's 64; issue
22's target for mini: >= 200x real time on 2 cores); `--frame-only` times the frame model alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def write_recording(path: Path, minutes: float, seed: int = 0) -> None:
    """A long FLAC written block by block (memory stays small): background noise with a sound every few seconds."""
    rng = np.random.default_rng(seed)
    block_s = 60
    total = int(round(minutes * 60 * RATE))
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="FLAC") as f:
        written = 0
        while written < total:
            t = np.arange(block_s * RATE) / RATE
            block = 0.01 * rng.standard_normal(t.shape)
            for start in np.arange(0, block_s - 2, 4.0) + rng.uniform(0, 1.5):
                i, n = int(start * RATE), int(rng.uniform(0.5, 1.5) * RATE)
                kind = rng.integers(3)
                tt = t[:n]
                sound = (np.sin(2 * np.pi * rng.uniform(200, 2000) * tt) if kind == 0 else
                         np.sin(2 * np.pi * (300 + 1500 * tt / tt[-1]) * tt) if kind == 1 else
                         rng.standard_normal(n))
                block[i:i + n] += 0.3 * sound[: len(block) - i]
            block = block[: total - written]
            f.write(np.clip(block, -1, 1).astype(np.float32))
            written += len(block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording (default 10)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--checkpoint", help="the clip model (default: random AST-base384 weights)")
    parser.add_argument("--frame-checkpoint", help="the frame model (default: random AST-base384 with a frame head)")
    parser.add_argument("--student", choices=["tiny", "mini", "small"],
                        help="the frame model: a random distillation student of this size with a frame head")
    parser.add_argument("--mel-bins", type=int, default=128, help="--student: its mel bins (default 128; CED: 64)")
    parser.add_argument("--frame-only", action="store_true", help="time the frame model alone (no clip model)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import torch

    from ast_audio import AST, ASTConfig, FrontendConfig, save_model
    from ast_audio.config import STUDENT_SIZES, STUDENT_STRIDE, FrameHeadConfig
    from ast_audio.infer.pipeline import EventPipeline
    from ast_audio.infer.tagger import Tagger
    from ast_audio.model.precision import choose_precision, cpu_info
    from ast_audio.weights.checkpoint import load_model

    choice = choose_precision(args.precision)
    print(f"cpu: {cpu_info().describe()}\n{choice.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_ckpt, frame_ckpt = args.checkpoint, args.frame_checkpoint
        if clip_ckpt is None:
            torch.manual_seed(0)
            clip_ckpt = str(save_model(AST(ASTConfig()), tmp / "clip"))
        if frame_ckpt is None and args.student:
            torch.manual_seed(0)
            config = ASTConfig(model_size=STUDENT_SIZES[args.student], fstride=STUDENT_STRIDE, tstride=STUDENT_STRIDE,
                               input_fdim=args.mel_bins, frame_head=FrameHeadConfig())
            frontend = FrontendConfig(num_mel_bins=args.mel_bins, target_length=config.input_tdim)
            frame_ckpt = str(save_model(AST(config, frontend=frontend), tmp / "frame"))
        elif frame_ckpt is None:
            torch.manual_seed(0)
            frame_ckpt = str(save_model(AST(ASTConfig(frame_head=FrameHeadConfig())), tmp / "frame"))
        audio, warm = tmp / "recording.flac", tmp / "warm.flac"
        write_recording(audio, args.minutes)
        write_recording(warm, 0.25, seed=1)
        seconds = sf.info(str(audio)).duration
        frame = Tagger(load_model(frame_ckpt, precision=choice))
        runs = {"frame model, frame defaults": EventPipeline(frame, batch_size=args.batch_size)}
        if not args.frame_only:
            clip = Tagger(load_model(clip_ckpt, precision=choice))
            full = clip.max_window_s
            runs = {"clip model, clip defaults": EventPipeline(clip, batch_size=args.batch_size),
                    f"clip model, window = hop = its input ({full:g} s)":
                        EventPipeline(clip, window_s=full, hop_s=full, batch_size=args.batch_size), **runs}
        results = {"cpu": cpu_info().describe(), "precision": choice.precision, "audio_s": seconds, "runs": {}}
        for label, pipeline in runs.items():
            pipeline.run(warm)  # first passes: graph and kernel set-up, outside the clock
            start = time.perf_counter()
            result = pipeline.run(audio)
            wall = time.perf_counter() - start
            w = pipeline.windowing
            results["runs"][label] = {"wall_s": wall, "realtime_factor": seconds / wall, "passes": result.passes,
                                      "window_s": w.window_s, "hop_s": w.hop_s, "events": len(result.events)}
            print(f"{label} (window {w.window_s:g} s, hop {w.hop_s:g} s): {result.passes} passes, "
                  f"{seconds / 60:.1f} min of audio in {wall:.1f} s -> {seconds / wall:.1f}x real time", flush=True)
    if args.frame_only:
        return finish(results, args.json)
    clip_rtf = results["runs"]["clip model, clip defaults"]["realtime_factor"]
    frame_rtf = results["runs"]["frame model, frame defaults"]["realtime_factor"]
    results["frame_over_clip"] = frame_rtf / clip_rtf
    print(f"frame model / clip defaults: {frame_rtf / clip_rtf:.1f}x faster (issue 20's target: >= 10x)")
    return finish(results, args.json)


def finish(results: dict, json_path: str | None) -> int:
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
