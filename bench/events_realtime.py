"""Real-time factor of `ast-audio events` on long audio, end to end through the CLI (decoding, resampling, fbank,
model, detection, output), with the precision auto picks on this CPU.

    .venv/bin/python bench/events_realtime.py [--minutes 60] [--precision auto] [--checkpoint C]

Without --checkpoint it saves random AST-base384 weights (the speed does not depend on the values). It writes a
generated recording of --minutes minutes (16 kHz FLAC: tones, chirps and noise bursts over background noise), then
times `ast-audio events` on it twice: with the default window and hop (half the model's 10.24 s input, every tenth of
that: docs/events.md) and with window = hop = 10.24 s (each sample scored once), and prints the wall time and
real-time factor of each with the CPU line and what auto picked. The one-off ONNX Runtime graph build (cached) is done
before the timed runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CLI = str(Path(sys.executable).with_name("ast-audio"))
RATE = 16000


def write_recording(path: Path, minutes: float, seed: int = 0) -> None:
    """A long FLAC written block by block (memory stays small): background noise with a sound every few seconds."""
    rng = np.random.default_rng(seed)
    block_s = 60
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="FLAC") as f:
        for _ in range(int(np.ceil(minutes * 60 / block_s))):
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
            f.write(np.clip(block, -1, 1).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--checkpoint", help="default: random AST-base384 weights")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import torch

    from ast_audio import AST, ASTConfig, save_model
    from ast_audio.model.precision import choose_precision, cpu_info

    choice = choose_precision(args.precision)
    print(f"cpu: {cpu_info().describe()}\n{choice.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = str(save_model(AST(ASTConfig()), tmp / "base"))
        audio = tmp / "recording.flac"
        write_recording(audio, args.minutes)
        seconds = sf.info(str(audio)).duration
        warm = tmp / "warm.flac"
        write_recording(warm, 0.5)
        subprocess.run([CLI, "events", str(warm), "--checkpoint", checkpoint, "--precision", args.precision],
                       check=True, capture_output=True)  # builds and caches an ONNX Runtime graph if auto picks one
        results = {"cpu": cpu_info().describe(), "precision": choice.precision, "audio_s": seconds, "runs": {}}
        # The model's whole input as window and hop: the cheapest run that still scores every sample once.
        full = f"{ASTConfig().input_tdim * 0.01:g}" if args.checkpoint is None else None  # 1024 frames: 10.24 s
        runs = [("default window and hop", [])]
        if full is not None:
            runs.append((f"window = hop = the model's input ({full} s)", ["--window", full, "--hop", full]))
        for label, extra in runs:
            start = time.perf_counter()
            run = subprocess.run([CLI, "events", str(audio), "--checkpoint", checkpoint, "--precision",
                                  args.precision, "--format", "json", "-o", str(tmp / "events.json"), *extra],
                                 capture_output=True, text=True)
            wall = time.perf_counter() - start
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                return 1
            results["runs"][label] = {"wall_s": wall, "realtime_factor": seconds / wall}
            print(f"{label}: {seconds / 60:.0f} min of audio in {wall:.0f} s -> {seconds / wall:.1f}x real time",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
