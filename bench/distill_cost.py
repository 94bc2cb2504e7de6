"""Per-clip costs of distilling an AudioSet-size AST (the estimates per 1,000 hours in docs/training.md).

A random AST-base384 (527 classes, 1024 frames) as the teacher on `--clips` generated 10 s clips x `--views` views:
seconds per clip-view of `distill logits` (decode, views, teacher) and bytes per clip-view stored at top-20; then a
training step (forward, backward, Adam) of each student on a batch of views, and the seconds per clip of making a
view (decode excluded: fbank, shift, masks).

Usage: OMP_NUM_THREADS=2 python bench/distill_cost.py [--clips 4] [--views 2] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ast_audio.audio.features import FeatureExtractor
from ast_audio.bench.speed import random_base_model
from ast_audio.config import STUDENT_SIZES, STUDENT_STRIDE, ASTConfig, FrontendConfig
from ast_audio.model import AST
from ast_audio.train.distill import ViewConfig, extract_logits, make_view
from ast_audio.train.logits import storage_bytes
from ast_audio.weights.checkpoint import save_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    out: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_model(random_base_model(), work / "teacher")
        rng = np.random.default_rng(0)
        (work / "audio").mkdir()
        for i in range(args.clips):
            sf.write(str(work / "audio" / f"{i}.flac"), (0.1 * rng.standard_normal(160000)).astype(np.float32), 16000)
        start = time.perf_counter()
        extract_logits([str(work / "teacher")], work / "audio", work / "logits", views=args.views, top_k=20,
                       batch_size=args.batch)
        clip_views = args.clips * args.views
        out["logits_s_per_clip_view"] = (time.perf_counter() - start) / clip_views
        out["bytes_per_clip_view"] = storage_bytes(work / "logits") / clip_views
        out["audio_bytes_per_clip_flac"] = sum(p.stat().st_size for p in (work / "audio").iterdir()) / args.clips
    frontend = FrontendConfig()
    extractor = FeatureExtractor(frontend)
    wave = torch.randn(160000) * 0.1
    start = time.perf_counter()
    for v in range(1, 9):
        make_view(wave, v, v, extractor, ViewConfig.for_input(frontend))
    out["view_s_per_clip"] = (time.perf_counter() - start) / 8
    x = torch.randn(args.batch, 1024, 128) * 0.5
    for name, size in STUDENT_SIZES.items():
        model = AST(ASTConfig(model_size=size, fstride=STUDENT_STRIDE, tstride=STUDENT_STRIDE)).train()
        opt = torch.optim.Adam(model.parameters())
        times = []
        for _ in range(3):
            start = time.perf_counter()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.rand(args.batch, 527))
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        out[f"{name}_train_s_per_clip"] = min(times[1:]) / args.batch
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
