"""CPU benchmark of the AST core against transformers, in one run on the same random base384 weights.

    .venv/bin/python bench/bench_core.py [--repeats 5] [--batch 4] [--threads N]

Prints per-clip time of ast-audio's AST and transformers' ASTForAudioClassification (SDPA) on 10.24 s inputs
(1024 frames, 1214 tokens), their ratio and max logit difference, and the fbank time per 10 s clip of
ast-audio's batched torch fbank against transformers' ASTFeatureExtractor (its numpy path here, since
torchaudio is not installable). Timings are medians of `--repeats` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="batch size of the throughput measurement")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

    import transformers
    from transformers import ASTConfig as HFConfig
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    from ast_audio import load_model
    from ast_audio.audio.fbank import fbank

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    hf = ASTForAudioClassification(HFConfig(num_labels=527)).eval()  # base384 shape: 768 wide, 12 layers, 1024 frames
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_model(tmp).eval()

    x = torch.randn(args.batch, 1024, 128) * 0.5
    with torch.inference_mode():
        diff = (ours(x[:1]) - hf(x[:1]).logits).abs().max().item()
    print(f"same weights: max |logit difference| = {diff:.2e}")

    rows = []
    for batch in (1, args.batch):
        xb = x[:batch]
        with torch.inference_mode():
            t_ours = median_seconds(lambda xb=xb: ours(xb), args.repeats) / batch
            t_hf = median_seconds(lambda xb=xb: hf(xb).logits, args.repeats) / batch
        rows.append((batch, t_ours, t_hf))
    print("\nAST-base384, 10.24 s clip (1024 frames), fp32, CPU")
    print(f"{'batch':>5} {'ast-audio s/clip':>17} {'transformers s/clip':>20} {'speed-up':>9}")
    for batch, t_ours, t_hf in rows:
        print(f"{batch:>5} {t_ours:>17.3f} {t_hf:>20.3f} {t_hf / t_ours:>8.2f}x")

    rng = np.random.default_rng(0)
    clips = rng.uniform(-0.5, 0.5, size=(8, 160000)).astype(np.float32)
    extractor = ASTFeatureExtractor()
    batch_t = torch.from_numpy(clips)
    t_fb_batch = median_seconds(lambda: fbank(batch_t), args.repeats) / len(clips)
    t_fb_one = median_seconds(lambda: fbank(batch_t[0]), args.repeats)
    t_hf_fe = median_seconds(lambda: extractor(clips[0], sampling_rate=16000, return_tensors="np"), args.repeats)
    print("\nfbank per 10 s clip (998 frames x 128 bins)")
    print(f"  ast-audio fbank, batch of 8: {t_fb_batch * 1e3:7.2f} ms/clip  ({t_hf_fe / t_fb_batch:.1f}x transformers)")
    print(f"  ast-audio fbank, one clip:   {t_fb_one * 1e3:7.2f} ms/clip  ({t_hf_fe / t_fb_one:.1f}x transformers)")
    print(f"  transformers ASTFeatureExtractor (numpy): {t_hf_fe * 1e3:7.2f} ms/clip")


if __name__ == "__main__":
    main()
