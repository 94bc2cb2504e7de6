"""Measuring: model FLOPs, the machine's matmul peak, interleaved timing, and the result records of a benchmark.

Repeats are interleaved (round r times every variant once) so that a noisy, shared machine slows them alike; a
variant's time is the best of its repeats (interference only ever adds time), medians are kept too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..config import ASTConfig
from ..model.precision import cpu_info

# ----------------------------------------------------------------------------------------------------------------
# FLOPs and the matmul peak


def ast_flops(config: ASTConfig) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one clip's forward pass, by part, from the config.

    Counts the patch convolution, per block the qkv / attention scores / attention-weighted values / output
    projection / two MLP products, and the head; LayerNorm, softmax, GELU and adds are left out (< 1%).
    AST-base384 on 1024 frames: 1212 patches + 2 tokens, 260.5 GFLOP.
    """
    n, d = config.num_patches + 2, config.embed_dim  # tokens, width
    hidden = int(d * config.mlp_ratio)
    parts = {
        "patch_embed": 2.0 * config.num_patches * config.fshape * config.tshape * d,
        "qkv": 2.0 * n * d * 3 * d * config.depth,
        "attention": 2.0 * 2 * n * n * d * config.depth,  # q @ k^T and p @ v over all heads
        "proj": 2.0 * n * d * d * config.depth,
        "mlp": 2.0 * 2 * n * d * hidden * config.depth,
        "head": 2.0 * d * config.num_classes,
    }
    parts["total"] = sum(parts.values())
    return parts


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn` after one untimed warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def native_dtypes() -> tuple[str, ...]:
    """The matmul dtypes this CPU runs natively: fp32 and int8 always, bf16 where oneDNN has bf16 kernels."""
    return ("fp32", "bf16", "int8") if cpu_info().native_bf16 else ("fp32", "int8")


def matmul_peak(dtype: str, repeats: int = 3) -> float:
    """Measured GFLOP/s of torch.mm ("fp32", "bf16") or torch._int_mm ("int8", GOP/s).

    The best rate over the two AST-base MLP products at one clip (1024 tokens x 768 x 3072 and back, 4.8 GFLOP
    each: tens of milliseconds in fp32 on 2 AVX2 cores), each the best of `repeats`: the rate the model's
    products can reach at most on this machine. Call it only for `native_dtypes()` (emulated bf16 runs at ~1
    GFLOP/s).
    """
    shapes = [(1024, 768, 3072), (1024, 3072, 768)]
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for m, k, n in shapes:
            if dtype == "int8":
                a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=gen)
                b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=gen)
                product = torch._int_mm
            else:
                torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
                a = torch.randn(m, k, generator=gen).to(torch_dtype)
                b = torch.randn(k, n, generator=gen).to(torch_dtype)
                product = torch.mm
            try:
                seconds = min(time_calls(lambda a=a, b=b, product=product: product(a, b), repeats))
                best = max(best, 2.0 * m * k * n / seconds / 1e9)
            except RuntimeError:  # e.g. no int8 matmul kernel on this build
                continue
    return best


# ----------------------------------------------------------------------------------------------------------------
# Timing


@dataclass
class VariantResult:
    """One implementation's speed: seconds per clip at batch 1 and at batch `batch` (best of the repeats)."""

    name: str
    compute_dtype: str  # the matmul peak it is compared with: fp32, bf16 or int8
    peer: bool = False  # another implementation (transformers, its ONNX export), not ast-audio
    latency_s: float | None = None  # batch 1, seconds per clip
    batch_s_per_clip: float | None = None  # batch B, seconds per clip
    latency_median_s: float | None = None
    batch_median_s_per_clip: float | None = None
    max_abs_logit_diff: float | None = None  # against ast-audio fp32, batch 1
    setup_s: float = 0.0  # building / converting / exporting / compiling (first call included when compiling)
    fraction_of_peak: float | None = None
    note: str = ""

    @property
    def throughput(self) -> float | None:
        """Clips per second at batch B."""
        return 1.0 / self.batch_s_per_clip if self.batch_s_per_clip else None


@dataclass
class BenchResult:
    """Everything `run_bench` measured (JSON-ready via `to_dict`)."""

    model: str
    flops_per_clip: float
    batch: int
    repeats: int
    threads: int
    torch_version: str
    cpu: str  # CpuInfo.describe()
    cpu_class: str
    auto: dict[str, str]  # {"precision", "reason", "variant"}
    peaks_gflops: dict[str, float]
    variants: list[VariantResult]
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it was not timed
    notes: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    realtime: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, variant in zip(out["variants"], self.variants, strict=True):
            row["throughput_clips_per_s"] = variant.throughput
        return out


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Call every function once per round for `repeats` rounds (after one warm-up round); seconds per call."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


Variant = tuple[VariantResult, Callable[[torch.Tensor], torch.Tensor]]


def emulated_reason(precision: str) -> str | None:
    """Why `precision` is not worth timing on this CPU (it would be emulated), or None."""
    if precision == "bf16" and not cpu_info().native_bf16:
        return (f"skipped: bf16 would be emulated on this CPU ({cpu_info().cpu_class}, no AVX512-BF16/AMX), "
                "about 100x slower than fp32")
    return None
