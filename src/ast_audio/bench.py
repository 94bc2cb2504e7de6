"""Inference benchmark and fast-path accuracy report behind `ast-audio bench`.

Speed (`run_bench`): per-clip latency at batch 1 and throughput at batch B of ast-audio's AST in each precision
(fp32, bf16, int8, ONNX Runtime fp32/int8; `auto` is whichever of them `choose_precision` picks here) and of the
peer paths a user would otherwise take on the same weights: transformers' ASTForAudioClassification (fp32 SDPA,
and bf16 where the CPU has it natively) and transformers' own model exported to ONNX and run by ONNX Runtime
(fp32, and int8 by `quantize_dynamic`'s defaults). All in one process, with their repeats interleaved (round r times
every variant once) so that a noisy, shared machine slows them alike; a variant's time is the best of its repeats
(interference only ever adds time), medians are kept in the JSON. Variants this CPU would emulate (bf16 without
AVX512-BF16/AMX: ~100x slower) are skipped with a one-line reason, so the default run takes minutes on any CPU.
The headline is auto's throughput over the fastest peer's. Each variant's "fraction of peak" is model FLOPs per
clip / seconds per clip / the measured matmul rate of its compute dtype (`matmul_peak`, sizes that take
milliseconds). The real-time factor tags a generated waveform of `seconds` s with auto's model through the Tagger
(decoding excluded, fbank included) in non-overlapping windows, and extrapolates to an hour.

Accuracy (`accuracy_report`): trains a small AST on generated labelled clips (ast_audio.demo's classes and
training loop), then on held-out generated clips reports each precision's top-1 agreement with fp32, mean and
max absolute logit difference, and its own accuracy.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ASTConfig
from .model import AST
from .model.precision import (
    ORT_PRECISIONS,
    PRECISIONS,
    apply_precision,
    check_precision,
    choose_precision,
    compile_model,
    cpu_info,
    onnxruntime_available,
)

# Issue 9's targets (ratios in one run on the CPU at hand): auto at least as fast as the fastest peer, aim 1.25x.
TARGETS = {"auto_vs_fastest_peer": 1.0}
AIM = {"auto_vs_fastest_peer": 1.25}
DEFAULT_BATCH = 4
DEFAULT_REPEATS = 2


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


def _first_line(exc: BaseException) -> str:
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


def random_base_model(seed: int = 0) -> AST:
    """AST-base384 (768 wide, 12 blocks, 1024 frames, 527 classes) with timm-style random weights."""
    torch.manual_seed(seed)
    return AST(ASTConfig()).eval()


Variant = tuple[VariantResult, Callable[[torch.Tensor], torch.Tensor]]


def emulated_reason(precision: str) -> str | None:
    """Why `precision` is not worth timing on this CPU (it would be emulated), or None."""
    if precision == "bf16" and not cpu_info().native_bf16:
        return (f"skipped: bf16 would be emulated on this CPU ({cpu_info().cpu_class}, no AVX512-BF16/AMX), "
                "about 100x slower than fp32")
    return None


def _our_variants(model: AST, precisions: Sequence[str], compile: bool, folder: Path,
                  skip: Callable[[str, str], None]) -> list[Variant]:
    out: list[Variant] = []
    for precision in precisions:
        reason = emulated_reason(precision)
        if reason is None and precision in ORT_PRECISIONS and not onnxruntime_available():
            reason = "skipped: onnx/onnxruntime not installed (pip install 'ast-audio[export]')"
        if reason:
            skip(f"ast-audio {precision}", reason)
            continue
        start = time.perf_counter()
        if precision in ORT_PRECISIONS:
            from .export.onnx import runtime_model

            converted = runtime_model(model, precision, cache=folder / "graphs")
        else:
            converted = apply_precision(copy.deepcopy(model), precision)
        dtype = precision.removeprefix("ort-")
        out.append((VariantResult(f"ast-audio {precision}", dtype, setup_s=time.perf_counter() - start), converted))
        if compile and precision not in ORT_PRECISIONS:
            compiled = compile_model(apply_precision(copy.deepcopy(model), precision))
            out.append((VariantResult(f"ast-audio {precision} compiled", dtype,
                                      note="torch.compile (inductor, frozen weights)"), compiled))
    return out


def _transformers_variants(model: AST, folder: Path, log: Callable[[str], None],
                           skip: Callable[[str, str], None]) -> list[Variant]:
    """transformers' AST on the same weights: fp32 (SDPA), bf16 where native, and its own ONNX export run by ONNX
    Runtime in fp32 and int8 (`quantize_dynamic` with its defaults, as a user would)."""
    try:
        import transformers
        from transformers import ASTForAudioClassification
    except ImportError as exc:
        log(f"transformers: not installed ({exc}); skipping the comparison")
        return []
    from .errors import ConfigError
    from .weights.checkpoint import save_hf

    try:
        save_hf(model, folder / "hf")
    except ConfigError as exc:
        log(f"transformers: cannot express this model ({exc}); skipping the comparison")
        return []
    transformers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        hf = ASTForAudioClassification.from_pretrained(folder / "hf", attn_implementation="sdpa").eval()
        setup = time.perf_counter() - start
    out: list[Variant] = [(VariantResult("transformers fp32", "fp32", peer=True, setup_s=setup),
                           lambda x: hf(input_values=x).logits)]
    reason = emulated_reason("bf16")
    if reason:
        skip("transformers bf16", reason)
    else:
        hf_bf16 = copy.deepcopy(hf).to(torch.bfloat16)
        out.append((VariantResult("transformers bf16", "bf16", peer=True),
                    lambda x: hf_bf16(input_values=x.to(torch.bfloat16)).logits.float()))
    if not onnxruntime_available():
        skip("transformers onnxruntime fp32/int8", "skipped: onnx/onnxruntime not installed")
        return out
    try:
        out += _transformers_onnx(folder, model.config)
    except Exception as exc:  # an exporter failure must not cost the rest of the run
        skip("transformers onnxruntime fp32/int8", f"export failed ({_first_line(exc)})")
    log(f"transformers {transformers.__version__}: " + ", ".join(v.name for v, _ in out))
    return out


def _transformers_onnx(folder: Path, config: ASTConfig) -> list[Variant]:
    """transformers' AST exported by torch.onnx (TorchScript exporter, eager attention, dynamic batch) and its
    dynamic int8 quantization with onnxruntime's defaults, each in an onnxruntime session."""
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import ASTForAudioClassification

    out: list[Variant] = []
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        eager = ASTForAudioClassification.from_pretrained(folder / "hf", attn_implementation="eager").eval()
        torch.onnx.export(eager, (torch.zeros(1, config.input_tdim, config.input_fdim),), str(folder / "hf.onnx"),
                          input_names=["input_values"], output_names=["logits"], opset_version=18, dynamo=False,
                          dynamic_axes={"input_values": {0: "batch"}, "logits": {0: "batch"}})
    export_s = time.perf_counter() - start
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" notice
    try:
        start = time.perf_counter()
        quantize_dynamic(str(folder / "hf.onnx"), str(folder / "hf-int8.onnx"), weight_type=QuantType.QInt8)
        quantize_s = time.perf_counter() - start
    finally:
        root.setLevel(level)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for name, path, dtype, setup in (("fp32", "hf.onnx", "fp32", export_s), ("int8", "hf-int8.onnx", "int8",
                                                                              export_s + quantize_s)):
        session = ort.InferenceSession(str(folder / path), options, providers=["CPUExecutionProvider"])
        out.append((VariantResult(f"transformers onnxruntime {name}", dtype, peer=True, setup_s=setup),
                    lambda x, session=session: torch.from_numpy(session.run(None, {"input_values": x.numpy()})[0])))
    return out


def realtime_factor(model: Any, seconds: float, batch: int, seed: int = 0, repeats: int = 1) -> dict[str, float]:
    """Tag a generated `seconds`-long waveform in non-overlapping windows of the model's input length with the
    Tagger (fbank + model, no decoding), best of `repeats` runs, and extrapolate to an hour: {'seconds',
    'windows', 'wall_s', 'realtime_factor', 'hour_s'}."""
    from .infer.tagger import Tagger

    tagger = Tagger(model)
    rate = tagger.sample_rate
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.05 * torch.randn(t.shape, generator=gen)
    window_s = tagger.max_window_s
    tagger.tag(wave[: int(window_s * rate * 2)], window_s=window_s, hop_s=window_s, batch_size=batch)  # warm-up
    wall = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = tagger.tag(wave, window_s=window_s, hop_s=window_s, batch_size=batch)[0]
        wall = min(wall, time.perf_counter() - start)
    factor = seconds / wall
    return {"seconds": seconds, "windows": len(result.windows), "wall_s": wall, "realtime_factor": factor,
            "hour_s": 3600.0 / factor}


def run_bench(model: AST | None = None, *, precisions: Sequence[str] = PRECISIONS, compare: bool = True,
              batch: int = DEFAULT_BATCH, repeats: int = DEFAULT_REPEATS, seconds: float = 60.0,
              compile: bool = False, peaks: bool = True, log: Callable[[str], None] = print,
              seed: int = 0) -> BenchResult:
    """Benchmark `model` (default: random AST-base384 weights) as described in the module docstring.

    Args:
        model: an fp32 AST (e.g. `load_model(checkpoint)`).
        precisions: ast-audio precisions to time ("auto" means the one `choose_precision` picks; it is always
            timed, so the headline ratio exists).
        compare: time the peers on the same weights (skipped with a note when transformers is not installed).
        batch: batch size of the throughput measurement.
        repeats: interleaved timed rounds (after one warm-up round).
        seconds: length of the generated waveform for auto's real-time factor (0 to skip it).
        compile: also time `compile_model` versions of the torch precisions.
        peaks: measure the matmul peaks of the native dtypes (needed for the fraction of peak).
    """
    auto = choose_precision("auto")
    precisions = list(dict.fromkeys(auto.precision if p == "auto" else p for p in precisions))
    if auto.precision not in precisions:
        precisions.append(auto.precision)
    if model is None:
        model, name = random_base_model(seed), "AST-base384, random weights"
    else:
        name = f"AST {model.config.embed_dim} wide, {model.config.depth} blocks"
    if not isinstance(model, AST) or getattr(model, "precision", "fp32") != "fp32":
        from .errors import ConfigError

        raise ConfigError("run_bench needs the fp32 AST (it converts copies to each precision)")
    model = model.float().eval()
    config = model.config
    flops = ast_flops(config)["total"]
    tokens = config.num_patches + 2
    name += f", {config.input_tdim} frames ({tokens} tokens), {flops / 1e9:.1f} GFLOP/clip"
    cpu = cpu_info()
    log(f"model: {name}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    log(f"cpu: {cpu.describe()}")
    log(auto.describe())

    dtypes = native_dtypes()
    peak: dict[str, float] = {}
    if peaks:
        peak = {dtype: matmul_peak(dtype) for dtype in dtypes}
        log("matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))

    notes: list[str] = []
    skipped: dict[str, str] = {}

    def note(message: str) -> None:
        notes.append(message)
        log(message)

    def skip(variant: str, reason: str) -> None:
        skipped[variant] = reason
        log(f"{variant}: {reason}")

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.input_tdim, config.input_fdim, generator=gen) * 0.5
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        variants = _our_variants(model, precisions, compile, Path(tmp), skip)
        if compare:
            variants += _transformers_variants(model, Path(tmp), note, skip)

        reference = model(x[:1])
        working = []
        for result, fn in variants:
            if result.name.endswith("compiled"):  # the first calls compile (batch 1 and batch B)
                start = time.perf_counter()
                try:
                    fn(x[:1])
                    fn(x)
                except Exception as exc:  # a backend without a C++ compiler, an op dynamo cannot trace, ...
                    note(f"{result.name}: compilation failed ({_first_line(exc)}); left out")
                    continue
                result.setup_s = time.perf_counter() - start
            result.max_abs_logit_diff = float((fn(x[:1]).float() - reference).abs().max())
            working.append((result, fn))
        variants = working

        for size, attr in ((1, "latency"), (batch, "batch")):
            xb = x[:size]
            times = interleaved_times({r.name: (lambda fn=fn, xb=xb: fn(xb)) for r, fn in variants}, repeats)
            for result, _ in variants:
                best, median = min(times[result.name]) / size, statistics.median(times[result.name]) / size
                if attr == "latency":
                    result.latency_s, result.latency_median_s = best, median
                else:
                    result.batch_s_per_clip, result.batch_median_s_per_clip = best, median
            log(f"timed batch {size}: " + ", ".join(f"{r.name} {min(times[r.name]) / size:.4g} s/clip"
                                                    for r, _ in variants))

        realtime = {}
        auto_variant = f"ast-audio {auto.precision}"
        if seconds > 0:
            runner = next((fn for r, fn in variants if r.name == auto_variant), None)
            if runner is not None:
                realtime[f"auto ({auto.precision})"] = realtime_factor(runner, seconds, batch, seed, repeats)
                log(f"real time (auto, {auto.precision}): "
                    f"{realtime[f'auto ({auto.precision})']['realtime_factor']:.1f}x")

    if peaks:  # measured again after the timings, keeping the best: a busy moment must not deflate the peak
        peak = {dtype: max(peak[dtype], matmul_peak(dtype)) for dtype in dtypes}
        log("matmul peak, best of before and after: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    results = [r for r, _ in variants]
    for r in results:
        if peak.get(r.compute_dtype) and r.batch_s_per_clip:
            r.fraction_of_peak = flops / r.batch_s_per_clip / (peak[r.compute_dtype] * 1e9)
    bench = BenchResult(model=name, flops_per_clip=flops, batch=batch, repeats=repeats,
                        threads=torch.get_num_threads(), torch_version=torch.__version__, cpu=cpu.describe(),
                        cpu_class=cpu.cpu_class,
                        auto={"precision": auto.precision, "reason": auto.reason, "variant": auto_variant},
                        peaks_gflops=peak, variants=results, skipped=skipped, notes=notes, realtime=realtime)
    bench.ratios = bench_ratios(bench)
    bench.targets = check_targets(bench)
    return bench


def fastest_peer(bench: BenchResult, attr: str = "batch_s_per_clip") -> VariantResult | None:
    """The peer variant with the lowest seconds per clip (`attr`: batch_s_per_clip or latency_s), or None."""
    peers = [r for r in bench.variants if r.peer and getattr(r, attr)]
    return min(peers, key=lambda r: getattr(r, attr)) if peers else None


def bench_ratios(bench: BenchResult) -> dict[str, float]:
    """Speed-ups (peer seconds per clip / ours) at batch B and batch 1: every ast-audio variant against the fastest
    peer, and auto's headline ratio."""
    ratios: dict[str, float] = {}
    ours = [r for r in bench.variants if not r.peer]
    for attr, label in (("batch_s_per_clip", f"batch {bench.batch}"), ("latency_s", "batch 1")):
        best = fastest_peer(bench, attr)
        if best is None:
            continue
        for r in ours:
            if getattr(r, attr):
                ratios[f"{r.name} / {best.name} ({label})"] = getattr(best, attr) / getattr(r, attr)
        auto = next((r for r in ours if r.name == bench.auto["variant"]), None)
        if auto is not None and getattr(auto, attr):
            ratios[f"auto / fastest peer ({label})"] = getattr(best, attr) / getattr(auto, attr)
    return ratios


def check_targets(bench: BenchResult) -> dict[str, dict[str, Any]]:
    """Issue 9's target against this run: {target: {value, goal, aim, met}}; skipped when no peer was timed."""
    value = bench.ratios.get(f"auto / fastest peer (batch {bench.batch})")
    if value is None:
        return {}
    key = "auto_vs_fastest_peer"
    return {key: {"value": value, "goal": TARGETS[key], "aim": AIM[key], "met": value >= TARGETS[key]}}


def format_bench(bench: BenchResult) -> str:
    """The human-readable report printed by `ast-audio bench`."""
    lines = [f"{bench.model}", f"cpu: {bench.cpu}",
             f"auto picks {bench.auto['precision']}: {bench.auto['reason']}",
             f"torch {bench.torch_version}, {bench.threads} threads; best of {bench.repeats} interleaved repeats after "
             f"a warm-up; batch-{bench.batch} throughput"]
    if bench.peaks_gflops:
        lines.append("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in bench.peaks_gflops.items())
                     + f"; model: {bench.flops_per_clip / 1e9:.1f} GFLOP/clip")
    lines.append("")
    header = (f"{'variant':<34} {'batch 1 s/clip':>14} {'batch ' + str(bench.batch) + ' s/clip':>15} "
              f"{'clips/s':>8} {'of peak':>9} {'max|dlogit|':>12} {'setup s':>8}")
    lines += [header, "-" * len(header)]
    for r in bench.variants:
        frac = f"{100 * r.fraction_of_peak:.0f}% {r.compute_dtype}" if r.fraction_of_peak is not None else "-"
        label = r.name + (" = auto" if r.name == bench.auto["variant"] else "")
        lines.append(f"{label:<34} {r.latency_s:>14.4g} {r.batch_s_per_clip:>15.4g} {r.throughput:>8.4g} "
                     f"{frac:>9} {r.max_abs_logit_diff:>12.2e} {r.setup_s:>8.1f}")
    for name, reason in bench.skipped.items():
        lines.append(f"{name:<34} {reason}")
    if bench.ratios:
        lines += ["", "speed-ups over the fastest peer (its seconds per clip / ours):"]
        lines += [f"  {k:<62} {v:6.2f}x" for k, v in bench.ratios.items()]
    if bench.realtime:
        lines += ["", "an hour of audio (Tagger: fbank + model, non-overlapping windows, batch "
                  f"{bench.batch}; best of {bench.repeats} runs on a generated waveform, extrapolated):"]
        for precision, rt in bench.realtime.items():
            lines.append(f"  {precision}: {rt['seconds']:.0f} s of audio ({rt['windows']} windows) in "
                         f"{rt['wall_s']:.1f} s -> {rt['realtime_factor']:.1f}x real time, "
                         f"an hour in {rt['hour_s']:.0f} s "
                         f"(50% overlap, the tag default: {rt['realtime_factor'] / 2:.1f}x)")
    if bench.targets:
        lines += ["", "issue 9 target (this run):"]
        for k, t in bench.targets.items():
            lines.append(f"  {k:<24} {t['value']:.2f}x  (goal >= {t['goal']:g}x, aim {t['aim']:g}x)  "
                         f"{'met' if t['met'] else 'NOT met'}")
    if bench.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in bench.notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Accuracy of the fast paths


@dataclass
class AccuracyRow:
    """One fast path against fp32 on the held-out clips."""

    name: str
    top1_agreement: float  # fraction of clips whose top class equals fp32's
    mean_abs_logit_diff: float
    max_abs_logit_diff: float
    accuracy: float  # top-1 accuracy against the true labels


@dataclass
class AccuracyReport:
    classes: tuple[str, ...]
    num_train: int
    num_test: int
    model: str
    epochs: int
    train_seconds: float
    rows: list[AccuracyRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _generated_split(per_class: int, rng, extractor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) unnormalised padded fbank frames and (B,) class indices of `per_class` clips of each demo class."""
    from .demo import CLASSES, synth_clip

    frames, labels = [], []
    for label, kind in enumerate(CLASSES):
        for _ in range(per_class):
            clip = torch.from_numpy(synth_clip(kind, rng))
            frames.append(extractor.pad_or_crop(extractor.frames(clip)))  # (T_i, F) -> (T, F)
            labels.append(label)
    return torch.stack(frames), torch.tensor(labels)


def accuracy_report(*, train_per_class: int = 60, test_per_class: int = 100, epochs: int = 40,
                    precisions: Sequence[str] = PRECISIONS, seed: int = 0,
                    log: Callable[[str], None] = print) -> AccuracyReport:
    """Train the demo's small AST on generated clips for `epochs` epochs (the demo's loop and schedule), then
    compare each precision ("auto" = the one `choose_precision` picks here; the ONNX Runtime ones when onnxruntime
    is installed, else noted) to fp32 on `test_per_class` fresh clips per class.

    A fixed epoch count (not a time budget) keeps the trained model, hence the report, the same on a busy
    machine as on a quiet one (for a given seed and torch build)."""
    import numpy as np

    from .audio.features import FeatureExtractor
    from .config import FrontendConfig
    from .demo import CLASSES, INPUT_TDIM, norm_stats, train

    auto = choose_precision("auto")
    precisions = list(dict.fromkeys(auto.precision if p == "auto" else check_precision(p) for p in precisions))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    unnormalised = FeatureExtractor(FrontendConfig(target_length=INPUT_TDIM))
    train_frames, y_train = _generated_split(train_per_class, rng, unnormalised)
    test_frames, y_test = _generated_split(test_per_class, rng, unnormalised)
    mean, std = norm_stats(train_frames)
    extractor = FeatureExtractor(unnormalised.config.replace(mean=mean, std=std))
    x_train, x_test = extractor.normalize(train_frames), extractor.normalize(test_frames)

    config = ASTConfig(model_size="tiny224", embed_dim=64, depth=2, num_heads=4, input_tdim=INPUT_TDIM,
                       num_classes=len(CLASSES))
    model = AST(config, frontend=extractor.config, labels=CLASSES, multi_label=False)
    log(f"training a small AST ({config.embed_dim} wide, {config.depth} blocks) on {len(y_train)} generated clips "
        f"for {epochs} epochs")
    start = time.perf_counter()
    train(model, x_train, y_train, seconds_budget=math.inf, max_epochs=epochs, seed=seed, log=log)
    train_seconds = time.perf_counter() - start

    notes: list[str] = [f"auto picks {auto.precision} on this CPU ({auto.reason})"]
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            if precision in ORT_PRECISIONS:
                if not onnxruntime_available():
                    notes.append(f"{precision}: onnx/onnxruntime not installed; left out")
                    log(notes[-1])
                    continue
                from .export.onnx import runtime_model

                converted = runtime_model(model, precision, cache=tmp)
            else:
                converted = apply_precision(copy.deepcopy(model), precision)
            outputs[f"ast-audio {precision}"] = converted(x_test).float()
    with torch.inference_mode():
        reference = model(x_test)
    top_ref = reference.argmax(dim=1)
    rows = []
    for name, logits in outputs.items():
        diff = (logits - reference).abs()
        rows.append(AccuracyRow(name=name, top1_agreement=float((logits.argmax(dim=1) == top_ref).float().mean()),
                                mean_abs_logit_diff=float(diff.mean()), max_abs_logit_diff=float(diff.max()),
                                accuracy=float((logits.argmax(dim=1) == y_test).float().mean())))
    described = f"{config.embed_dim} wide, {config.depth} blocks, {INPUT_TDIM} frames, {len(CLASSES)} classes"
    return AccuracyReport(classes=CLASSES, num_train=len(y_train), num_test=len(y_test), model=described,
                          epochs=epochs, train_seconds=train_seconds, rows=rows, notes=notes)


def format_accuracy(report: AccuracyReport) -> str:
    lines = [f"small AST ({report.model}) trained {report.epochs} epochs ({report.train_seconds:.0f} s) on "
             f"{report.num_train} generated clips; "
             f"{report.num_test} held-out generated clips ({', '.join(report.classes)})", ""]
    header = f"{'path':<20} {'top-1 agreement':>16} {'mean|dlogit|':>13} {'max|dlogit|':>12} {'accuracy':>9}"
    lines += [header, "-" * len(header)]
    for r in report.rows:
        lines.append(f"{r.name:<20} {100 * r.top1_agreement:>15.2f}% {r.mean_abs_logit_diff:>13.2e} "
                     f"{r.max_abs_logit_diff:>12.2e} {100 * r.accuracy:>8.2f}%")
    if report.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
