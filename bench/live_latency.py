"""Latency of live tagging (`ast-audio listen`, `StreamingTagger`, /v1/stream): from the moment a sound's onset has
fully arrived to the moment a hop's scores for it exist, split into waiting for the hop, front end and model.

    .venv/bin/python bench/live_latency.py [--precisions auto] [--hops 0.5,1,2] [--onsets 20] [--block 0.02]
                                           [--checkpoint C] [--json OUT] [--frame-head]

Without --checkpoint it uses random AST-base384 weights (the speed does not depend on the values; the one-off ONNX
Runtime graph build of ort precisions is cached and done before timing).

What is measured, per precision and hop. A stream arrives in blocks of --block seconds at real-time pace (a sound
card delivers 10-20 ms blocks). A known sound (a 1 kHz tone of --sound seconds over noise) starts at a random sample;
its onset is complete when its last sample s_last has arrived (the block holding it). Windows are placed as
`StreamingTagger` places them (starts 0, H, 2H, ...; a window is scored once its last sample has arrived), and the
hop that reports the onset is the first whose window holds the whole sound: with random weights no score crosses a
meaningful threshold, so this stands for the first hop a model that fires on the complete onset can cross it (a
trained model that fires on part of the sound crosses sooner, one that needs half the window later). Then:
- wait: arrival of that window's last block - arrival of the block holding s_last (depends on the hop and on where
  the onset falls between hops: 0 .. H plus one block);
- front end: the Kaldi fbank and normalisation of that window (`FeatureExtractor`), timed;
- model: the forward pass and scores (`Tagger.scores`), timed (an ONNX graph with the fbank inside reports its
  front end inside the model time, and front end 0).
Total = wait + front end + model; p50 and p95 over --onsets onsets at random phases. The run is sequential (one window
at a time, as the live loop scores), so compute longer than the hop would also add queueing in a real stream: the
table says when compute exceeds the hop (then `listen` skips windows).

--frame-head: a frame model (without --checkpoint, random AST-base384 weights with the default frame head), whose hop's
frame columns are final when the hop arrives. Here the real `StreamingTagger` runs: one stream holding --onsets sounds
(one per stretch of sound + hop seconds, at random phases against the hops) is fed in --block blocks, each block
"arriving" when its last sample would have been recorded; for each sound, the time from the arrival of the block
holding its last sample to the frame scores of the column holding that sample = wait (to the arrival of the block
that completes the hop owning the column: under one hop) + the hop's pass (`LiveHop.compute_s`: front end and model,
one window). The table gives p50 / p95 and checks the bound p95 <= hop + one pass (the pass's p95). As above the
run is sequential: a pass longer than the hop would add queueing in a real stream (the table says so; then a live
stream scores the waiting hops in one pass).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def block_end_s(sample: int, block: int, rate: int) -> float:
    """When `sample` arrives: the end of the block holding it, in seconds from the stream's start."""
    return math.ceil((sample + 1) / block) * block / rate


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="auto", help="comma-separated (default auto)")
    parser.add_argument("--hops", default="0.5,1,2", help="hops in seconds, comma-separated (default 0.5,1,2)")
    parser.add_argument("--onsets", type=int, default=20, help="onsets per precision and hop (default 20)")
    parser.add_argument("--block", type=float, default=0.02, help="seconds per arriving block (default 0.02)")
    parser.add_argument("--sound", type=float, default=0.5, help="length of the known sound in seconds (0.5)")
    parser.add_argument("--checkpoint", help="default: random AST-base384 weights")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--frame-head", action="store_true", help="a frame model: time to the frame scores of a "
                        "sound's last column (default model: random AST-base384 with the default frame head)")
    args = parser.parse_args()
    if args.frame_head:
        return frame_main(args)

    from ast_audio.audio.features import FeatureExtractor
    from ast_audio.bench.speed import random_base_model
    from ast_audio.infer.tagger import Tagger
    from ast_audio.model.precision import choose_precision, cpu_info
    from ast_audio.weights.checkpoint import load_model, save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    hops = [float(h) for h in args.hops.split(",")]
    if args.sound <= 0:
        parser.error("--sound must be positive")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_model(random_base_model(), Path(tmp) / "base")
        print(f"cpu: {cpu_info().describe()}; torch threads {torch.get_num_threads()}", flush=True)
        for precision in args.precisions.split(","):
            choice = choose_precision(precision)
            tagger = Tagger(load_model(checkpoint, precision=choice))
            features = FeatureExtractor(tagger.model.frontend)
            rate = tagger.sample_rate
            window = tagger.model.frontend.input_samples
            in_graph = bool(getattr(tagger.model, "takes_waveforms", False))
            print(choice.describe(), flush=True)
            block = max(1, round(args.block * rate))
            sound = round(args.sound * rate)
            rng = np.random.default_rng(0)
            warm = torch.from_numpy((0.05 * rng.standard_normal(window)).astype(np.float32))
            tagger.score_windows([warm])  # one-off costs (allocation, graph session) before timing
            for hop_s in hops:
                hop = round(hop_s * rate)
                if sound + hop > window:  # then the first window past the onset may start after the sound did
                    raise SystemExit(f"--sound {args.sound:g} s plus the hop {hop_s:g} s exceed the {window / rate:g}"
                                     " s window: the first window past the onset would not hold the whole sound")
                waits, fronts, models, totals = [], [], [], []
                for _ in range(args.onsets):
                    last = int(rng.integers(window, window + 20 * hop))  # s_last: the onset's last sample
                    first_sample = last - sound + 1
                    n = math.ceil((last + 1 - window) / hop)  # first window start n * H with n * H + W > s_last
                    start = n * hop
                    wait = block_end_s(start + window - 1, block, rate) - block_end_s(last, block, rate)
                    x = 0.05 * rng.standard_normal(window)  # the window's samples: noise, the tone from its onset
                    t = np.arange(window)
                    tone = (t + start >= first_sample) & (t + start <= last)
                    x[tone] += 0.3 * np.sin(2 * np.pi * 1000.0 * (t[tone] + start) / rate)
                    samples = torch.from_numpy(x.astype(np.float32))[None]  # (1, W)
                    if in_graph:
                        t0 = time.perf_counter()
                        tagger.scores(samples)
                        front, model_s = 0.0, time.perf_counter() - t0
                    else:
                        t0 = time.perf_counter()
                        fbank = features(samples)  # (1, W) -> (1, T, F)
                        t1 = time.perf_counter()
                        tagger.scores(fbank)
                        front, model_s = t1 - t0, time.perf_counter() - t1
                    waits.append(wait)
                    fronts.append(front)
                    models.append(model_s)
                    totals.append(wait + front + model_s)
                row = {"precision": choice.precision, "requested": precision, "hop_s": hop_s,
                       "window_s": window / rate, "block_s": block / rate, "onsets": args.onsets,
                       **{f"{name}_p{q}": percentile(values, q) for name, values in
                          (("wait", waits), ("front", fronts), ("model", models), ("total", totals))
                          for q in (50, 95)},
                       "compute_over_hop": percentile([f + m for f, m in zip(fronts, models, strict=True)], 95) > hop_s}
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print()
    print("| precision | hop (s) | wait p50 / p95 (s) | front end p50 / p95 (ms) | model p50 / p95 (ms) | "
          "total p50 / p95 (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = r["precision"] if r["requested"] == r["precision"] else f"{r['requested']} -> {r['precision']}"
        front = (f"{r['front_p50'] * 1000:.0f} / {r['front_p95'] * 1000:.0f}" if r["front_p95"] > 0
                 else "(in the graph)")
        print(f"| {name} | {r['hop_s']:g} | {r['wait_p50']:.2f} / {r['wait_p95']:.2f} | {front} | "
              f"{r['model_p50'] * 1000:.0f} / {r['model_p95'] * 1000:.0f} | {r['total_p50']:.2f} / "
              f"{r['total_p95']:.2f}{' (compute > hop)' if r['compute_over_hop'] else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_info().describe(), "rows": rows}, indent=1))
    return 0


def frame_latencies(tagger, hop_s: float, onsets: int, block_s: float, sound_s: float,
                    rng: np.random.Generator) -> dict[str, list[float]]:
    """Wait, pass and total seconds per sound, from the real StreamingTagger (module docstring, --frame-head)."""
    from ast_audio.infer.live import StreamingTagger, frame_grid

    rate = tagger.sample_rate
    column, _ = frame_grid(tagger)
    streamer = StreamingTagger(tagger, rate, hop_s=hop_s, batch_size=1)
    hop, block, sound = streamer.hop, max(1, round(block_s * rate)), round(sound_s * rate)
    stretch = sound + hop  # one sound per stretch, at a random phase against the hops
    lasts = [i * stretch + int(rng.integers(0, hop)) + sound - 1 for i in range(onsets)]
    total = onsets * stretch + hop + column  # the last sound's hop completes before the stream ends
    x = 0.05 * rng.standard_normal(total)
    t = np.arange(total)
    for last in lasts:
        tone = (t > last - sound) & (t <= last)
        x[tone] += 0.3 * np.sin(2 * np.pi * 1000.0 * t[tone] / rate)
    x = x.astype(np.float32)
    done: list[tuple[int, int, float, float]] = []  # (first column, end column, arrival s, pass s) per hop
    for start in range(0, total, block):
        chunk = x[start:start + block]
        arrival = (start + chunk.shape[0]) / rate
        done += [(h.first_column, h.first_column + len(h.frames), arrival, h.compute_s)
                 for h in streamer.feed(chunk) if h.frames is not None]
    out: dict[str, list[float]] = {"wait": [], "pass": [], "total": []}
    for last in lasts:
        g = last // column
        arrival, pass_s = next((a, c) for first, end, a, c in done if first <= g < end)
        wait = arrival - block_end_s(last, block, rate)
        out["wait"].append(wait)
        out["pass"].append(pass_s)
        out["total"].append(wait + pass_s)
    return out


def frame_main(args: argparse.Namespace) -> int:
    from ast_audio import AST, ASTConfig
    from ast_audio.config import FrameHeadConfig
    from ast_audio.infer.live import is_frame_model, measure_window_s
    from ast_audio.infer.tagger import Tagger
    from ast_audio.model.precision import choose_precision, cpu_info
    from ast_audio.weights.checkpoint import load_model, save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    hops = [float(h) for h in args.hops.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            checkpoint = args.checkpoint
        else:
            torch.manual_seed(0)
            checkpoint = save_model(AST(ASTConfig(frame_head=FrameHeadConfig())).eval(), Path(tmp) / "frames")
        print(f"cpu: {cpu_info().describe()}; torch threads {torch.get_num_threads()}", flush=True)
        for precision in args.precisions.split(","):
            choice = choose_precision(precision)
            tagger = Tagger(load_model(checkpoint, precision=choice))
            if not is_frame_model(tagger):
                raise SystemExit(f"{checkpoint} is a clip model; --frame-head needs a frame model")
            print(choice.describe(), flush=True)
            measure_window_s(tagger, 0)  # one-off costs (allocation, graph session) before timing
            rng = np.random.default_rng(0)
            for hop_s in hops:
                got = frame_latencies(tagger, hop_s, args.onsets, args.block, args.sound, rng)
                row = {"precision": choice.precision, "requested": precision, "frames": True, "hop_s": hop_s,
                       "block_s": args.block, "onsets": args.onsets,
                       **{f"{name}_p{q}": percentile(values, q) for name, values in got.items() for q in (50, 95)}}
                row["bound_s"] = hop_s + row["pass_p95"]  # hop + one pass
                row["within_bound"] = row["total_p95"] <= row["bound_s"]
                row["compute_over_hop"] = row["pass_p95"] > hop_s  # a real-time stream would then merge hops
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print()
    print("| precision | hop (s) | wait p50 / p95 (s) | pass p50 / p95 (ms) | total p50 / p95 (s) | "
          "hop + pass p95 (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = r["precision"] if r["requested"] == r["precision"] else f"{r['requested']} -> {r['precision']}"
        print(f"| {name} | {r['hop_s']:g} | {r['wait_p50']:.2f} / {r['wait_p95']:.2f} | {r['pass_p50'] * 1000:.0f} / "
              f"{r['pass_p95'] * 1000:.0f} | {r['total_p50']:.2f} / {r['total_p95']:.2f} | {r['bound_s']:.2f}"
              f"{'' if r['within_bound'] else ' (exceeded)'}{' (compute > hop)' if r['compute_over_hop'] else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_info().describe(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
