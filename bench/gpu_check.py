"""GPU readiness check (under 5 minutes on one CUDA machine): is this GPU machine ready for AST at AudioSet scale?

    python bench/gpu_check.py [--json gpu_check.json] [--workers N] [--quick]      (or bench/gpu_check.sh)

1. Inference: AST-base384 (random weights) in bf16 with the flash SDPA kernel forced, batches 1, 8 and 64 of
   1024 x 128 inputs: ms per batch and clips/s.
2. Training step: AST-base384 at batch 12 and 48 under bf16 autocast (Adam, BCE), inputs from the full data
   pipeline (`ClipDataset` with the audioset-full recipe's augmentation: mixup, masks, 1024 frames, over generated
   10 s WAV clips, in a DataLoader with --workers processes): step time and clips/s.
3. Is the GPU fed? The same DataLoader's clips/s alone, against the step's clips/s at batch 48.
4. NCCL all-reduce of a gradient-sized buffer (AST-base's parameter count, fp32) over every GPU present (one
   process per GPU; with one GPU a one-rank group, which checks that NCCL initialises): ms and bus bandwidth.

Prints one table and writes the numbers as JSON. Without CUDA it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def _sync_time(fn, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up, with the GPU synchronised around each call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inference(repeats: int) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ast_audio.bench.speed import random_base_model

    model = random_base_model().cuda().to(torch.bfloat16).eval()
    rows = []
    for batch in (1, 8, 64):
        x = torch.randn(batch, 1024, 128, device="cuda", dtype=torch.bfloat16)
        row = {"part": "inference bf16", "batch": batch}
        try:
            with torch.inference_mode(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                seconds = _sync_time(lambda x=x: model(x), repeats)
            row.update(kernel="flash", ms=seconds * 1e3, clips_s=batch / seconds)
        except RuntimeError as exc:  # flash not available for this GPU/dtype: say so, time the default choice
            with torch.inference_mode():
                seconds = _sync_time(lambda x=x: model(x), repeats)
            row.update(kernel=f"default (flash: {str(exc).splitlines()[0][:80]})", ms=seconds * 1e3,
                       clips_s=batch / seconds)
        rows.append(row)
    return rows


def _clips(root: Path, count: int) -> Path:
    """`count` 10 s, 16 kHz clips (tone + noise) and a folder-layout CSV manifest over 4 classes."""
    rng = np.random.default_rng(0)
    t = np.arange(160000) / 16000
    lines = ["path,label"]
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.05 * rng.standard_normal(t.size)
        path = root / f"clip_{i:03d}.wav"
        sf.write(str(path), x.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"{path},class_{i % 4}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def training(root: Path, workers: int, repeats: int, batches: tuple[int, ...]) -> tuple[list[dict], dict]:
    from ast_audio.bench.speed import random_base_model
    from ast_audio.train.data import ClipDataset, collate
    from ast_audio.train.layouts import load_splits
    from ast_audio.train.recipes import make_recipe

    config = make_recipe("audioset-full", init="none")
    splits = load_splits("folder", _clips(root, max(batches) * 2), holdout=0.01)
    data = ClipDataset(splits.train, config.frontend, config.augment, seed=0)
    model = random_base_model().cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    rows = []
    for batch in batches:
        loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers,
                                             collate_fn=collate, pin_memory=True, drop_last=True,
                                             persistent_workers=workers > 0)
        first = next(iter(loader))
        x = first.x.cuda(non_blocking=True)
        y = torch.cat([first.y, first.y.new_zeros(first.y.shape[0], 527 - first.y.shape[1])], 1).cuda()  # (B, 527)

        def step(x=x, y=y) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = _sync_time(step, repeats)
        rows.append({"part": "train step bf16 autocast", "batch": batch, "ms": seconds * 1e3,
                     "clips_s": batch / seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
        torch.cuda.reset_peak_memory_stats()
    # The data pipeline alone at the largest batch: clips/s over a few batches after the first.
    loader = torch.utils.data.DataLoader(data, batch_size=max(batches), shuffle=True, num_workers=workers,
                                         collate_fn=collate, drop_last=True)
    it = iter(loader)
    next(it)
    start, clips = time.perf_counter(), 0
    for batch in it:
        clips += len(batch)
    loader_rate = clips / max(time.perf_counter() - start, 1e-9)
    step_rate = rows[-1]["clips_s"]
    fed = {"part": "data pipeline", "batch": max(batches), "workers": workers, "clips_s": loader_rate,
           "step_clips_s": step_rate, "fed": loader_rate >= step_rate,
           "workers_needed": int(np.ceil(step_rate / (loader_rate / max(workers, 1))))}
    return rows, fed


def _all_reduce_worker(rank: int, world: int, port: int, numel: int, repeats: int, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    buffer = torch.randn(numel, device="cuda")
    seconds = _sync_time(lambda: dist.all_reduce(buffer), repeats)
    if rank == 0:
        size = numel * 4
        queue.put({"part": "nccl all-reduce fp32", "gpus": world, "mib": size / 2**20, "ms": seconds * 1e3,
                   "bus_gb_s": 2 * (world - 1) / world * size / seconds / 1e9 if world > 1 else None})
    dist.destroy_process_group()


def all_reduce(repeats: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    from ast_audio.bench.speed import random_base_model

    numel = sum(p.numel() for p in random_base_model().parameters())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    world = torch.cuda.device_count()
    mp.start_processes(_all_reduce_worker, args=(world, port, numel, repeats, queue), nprocs=world, join=True,
                       start_method="spawn")
    return queue.get()


def format_table(result: dict) -> str:
    lines = [f"GPU: {result['gpu']} x {result['gpus']}, torch {result['torch']}, CUDA {result['cuda']}",
             f"{'part':<28} {'batch':>5} {'ms':>9} {'clips/s':>9}  note"]
    for row in result["inference"] + result["training"]:
        note = row.get("kernel", f"peak {row.get('peak_gib', 0):.1f} GiB")
        lines.append(f"{row['part']:<28} {row['batch']:>5} {row['ms']:>9.2f} {row['clips_s']:>9.1f}  {note}")
    fed = result["data"]
    lines.append(f"{'data pipeline':<28} {fed['batch']:>5} {'':>9} {fed['clips_s']:>9.1f}  {fed['workers']} workers; "
                 f"{'fed' if fed['fed'] else 'NOT fed'} (step needs {fed['step_clips_s']:.0f} clips/s, about "
                 f"{fed['workers_needed']} workers)")
    red = result["all_reduce"]
    bus = f", bus {red['bus_gb_s']:.1f} GB/s" if red.get("bus_gb_s") else " (one GPU: NCCL initialised)"
    lines.append(f"{red['part']:<28} {'':>5} {red['ms']:>9.2f} {'':>9}  {red['mib']:.0f} MiB on {red['gpus']} "
                 f"GPU(s){bus}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="gpu_check.json", help="where to write the numbers (default gpu_check.json)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader processes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 12 only for training, 2 repeats")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device on this machine (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'}); nothing to check")
        return 0
    repeats = 2 if args.quick else args.repeats
    began = time.perf_counter()
    result = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "inference": inference(repeats)}
    torch.cuda.empty_cache()  # the inference model is gone with its function
    with tempfile.TemporaryDirectory() as tmp:
        result["training"], result["data"] = training(Path(tmp), args.workers, repeats,
                                                      (12,) if args.quick else (12, 48))
    result["all_reduce"] = all_reduce(repeats)
    result["seconds"] = time.perf_counter() - began
    print(format_table(result))
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
