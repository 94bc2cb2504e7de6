"""CPU benchmark of training: the data pipeline's clips/s per core, and the step time of a tiny and a base AST.

    .venv/bin/python bench/bench_train.py [--clips 24] [--repeats 3] [--base-batches 2,12] [--skip-base]

1. Data pipeline on generated 10 s, 16 kHz clips with the AudioSet training augmentation (waveform mixup 0.5, freqm
   48, timem 192, 1024 frames; spec §2): clips/s through a DataLoader with 0 and 2 worker processes, divided by the
   cores used (1 for 0 workers, the worker count otherwise), with one torch thread per process. Baselines in the
   same run: decode only, and decode + fbank without augmentation (the evaluation pipeline); the last column gives
   each as a ratio to the augmented pipeline in one process.
2. Training step (forward + backward + Adam, fp32) of a 32-wide 2-layer AST and of AST-base384 on 1024 x 128
   inputs, against the forward pass alone (no grad) of the same model and batch as the in-run baseline.

Timings are medians of `--repeats` after one warm-up. The machine may be shared: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ast_audio.bench.timing import time_calls


def median_seconds(fn, repeats: int) -> float:
    return statistics.median(time_calls(fn, repeats))


def make_clips(root: Path, count: int) -> Path:
    """`count` 10 s clips (tone + noise, 4 classes) and a folder-layout CSV manifest (path,label)."""
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(160000) / 16000
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.05 * rng.standard_normal(t.size)
        path = root / f"clip_{i:03d}.wav"
        sf.write(str(path), x.astype(np.float32), 16000, subtype="PCM_16")
        rows.append([str(path), f"class_{i % 4}"])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return manifest


def bench_data(manifest: Path, repeats: int) -> list[tuple[str, int, float]]:
    from ast_audio.audio.io import load_audio
    from ast_audio.config import FrontendConfig
    from ast_audio.train.data import ClipDataset, collate
    from ast_audio.train.layouts import load_splits
    from ast_audio.train.recipes import AugmentConfig

    splits = load_splits("folder", manifest, holdout=0.1)
    data = splits.train
    frontend = FrontendConfig(target_length=1024)
    audioset_aug = AugmentConfig(mixup=0.5, freqm=48, timem=192)
    results = []

    def decode_only() -> None:
        for ex in data.examples:
            load_audio(ex.source, sample_rate=16000)

    seconds = median_seconds(decode_only, repeats)
    results.append(("decode only (load_audio, soxr)", 1, len(data) / seconds))
    for name, aug in (("decode + fbank, no augmentation", None), ("AudioSet augmentation (mixup 0.5, masks)",
                                                                  audioset_aug)):
        for workers in (0, 2):
            dataset = ClipDataset(data, frontend, aug, seed=0)
            epoch = [0]

            def run_loader(dataset=dataset, workers=workers, epoch=epoch) -> None:
                epoch[0] += 1
                dataset.set_epoch(epoch[0])  # fresh augmentation draws each pass
                loader = torch.utils.data.DataLoader(dataset, batch_size=12, num_workers=workers, collate_fn=collate)
                for _ in loader:
                    pass

            seconds = median_seconds(run_loader, repeats)
            results.append((f"{name}, {workers} workers", max(workers, 1), len(data) / seconds))
    return results


def bench_step(name: str, config, batch: int, repeats: int) -> tuple[str, int, float, float]:
    from ast_audio.model import AST

    torch.manual_seed(0)
    model = AST(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.95, 0.999), weight_decay=5e-7)
    x = torch.randn(batch, config.input_tdim, config.input_fdim) * 0.5
    y = (torch.rand(batch, config.num_classes) < 0.05).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return name, batch, median_seconds(step, repeats), median_seconds(forward, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96, help="10 s clips in the data benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny-batches", default="2,12")
    parser.add_argument("--base-batches", default="2", help="comma-separated; 12 takes minutes on 2 cores")
    parser.add_argument("--base-repeats", type=int, default=1)
    parser.add_argument("--skip-base", action="store_true")
    args = parser.parse_args()

    from ast_audio.config import ASTConfig

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    threads = torch.get_num_threads()
    # One intra-op thread for the data part, as DataLoader workers use: on a busy machine several threads per
    # small fbank op oversubscribe the cores (measured here: 10-100x slower with 2 threads under load).
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_clips(Path(tmp), args.clips)
        rows = bench_data(manifest, args.repeats)
    torch.set_num_threads(threads)
    augmented = rows[-2][2]  # clips/s of the augmented pipeline in one process (the baseline of the ratios)
    print(f"\nData pipeline, 10 s clips -> (1024, 128) inputs ({args.clips} clips, median of {args.repeats})")
    print(f"{'pipeline':<58} {'clips/s':>8} {'per core':>9} {'vs augmented':>13}")
    for name, cores, per_second in rows:
        print(f"{name:<58} {per_second:8.1f} {per_second / cores:9.1f} {per_second / augmented:13.2f}")

    tiny = ASTConfig(model_size="tiny224", embed_dim=32, depth=2, num_heads=4, num_classes=527)
    base = ASTConfig(model_size="base384", num_classes=527)
    steps = [bench_step("tiny (32 wide, 2 layers)", tiny, int(b), args.repeats) for b in args.tiny_batches.split(",")]
    if not args.skip_base:
        steps += [bench_step("base384 (768 wide, 12 layers)", base, int(b), args.base_repeats)
                  for b in args.base_batches.split(",")]
    print("\nTraining step on CPU, fp32, 1024 frames x 128 bins (1214 tokens), forward + backward + Adam")
    print(f"{'model':<32} {'batch':>5} {'step s':>9} {'s/clip':>8} {'forward s':>10} {'step/forward':>13}")
    for name, batch, step_s, forward_s in steps:
        print(f"{name:<32} {batch:5d} {step_s:9.3f} {step_s / batch:8.3f} {forward_s:10.3f} {step_s / forward_s:13.2f}")


if __name__ == "__main__":
    main()
