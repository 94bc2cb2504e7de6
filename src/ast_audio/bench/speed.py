"""Inference speed behind `ast-audio bench` (the accuracy report of `--accuracy` is accuracy.py).

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
(decoding excluded, fbank included) in non-overlapping windows, and extrapolates to an hour. The measuring tools
are timing.py, the peers peers.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import STUDENT_SIZES, STUDENT_STRIDE, ASTConfig
from ..errors import ConfigError
from ..export.backend import to_precision
from ..infer.tagger import Tagger
from ..model import AST
from ..model.precision import (
    ORT_PRECISIONS,
    PRECISIONS,
    choose_precision,
    compile_model,
    cpu_info,
    onnxruntime_available,
)
from .peers import transformers_variants
from .timing import (
    BenchResult,
    Variant,
    VariantResult,
    ast_flops,
    emulated_reason,
    first_line,
    interleaved_times,
    matmul_peak,
    native_dtypes,
)

TARGETS = {"auto_vs_fastest_peer": 1.0}
AIM = {"auto_vs_fastest_peer": 1.25}
DEFAULT_BATCH = 4
DEFAULT_REPEATS = 2


def random_base_model(seed: int = 0) -> AST:
    """AST-base384 (768 wide, 12 blocks, 1024 frames, 527 classes) with timm-style random weights."""
    torch.manual_seed(seed)
    return AST(ASTConfig()).eval()


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
        source = model if precision in ORT_PRECISIONS else copy.deepcopy(model)  # a graph is built from a copy
        converted = to_precision(source, precision, cache=folder / "graphs")
        dtype = precision.removeprefix("ort-")
        out.append((VariantResult(f"ast-audio {precision}", dtype, setup_s=time.perf_counter() - start), converted))
        if compile and precision not in ORT_PRECISIONS:
            compiled = compile_model(to_precision(copy.deepcopy(model), precision))
            out.append((VariantResult(f"ast-audio {precision} compiled", dtype,
                                      note="torch.compile (inductor, frozen weights)"), compiled))
    return out


def realtime_factor(model: Any, seconds: float, batch: int, seed: int = 0, repeats: int = 1) -> dict[str, float]:
    """Tag a generated `seconds`-long waveform in non-overlapping windows of the model's input length with the
    Tagger (fbank + model, no decoding), best of `repeats` runs, and extrapolate to an hour: {'seconds',
    'windows', 'wall_s', 'realtime_factor', 'hour_s'}."""
    tagger = Tagger(model)
    rate = tagger.sample_rate
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.05 * torch.randn(t.shape, generator=gen)
    window_s = tagger.max_window_s
    tagger.tag(wave[: int(window_s * rate * 2)], window_s=window_s, hop_s=window_s, batch_size=batch,
               sample_rate=rate)  # warm-up
    wall = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = tagger.tag(wave, window_s=window_s, hop_s=window_s, batch_size=batch, sample_rate=rate)[0]
        wall = min(wall, time.perf_counter() - start)
    factor = seconds / wall
    return {"seconds": seconds, "windows": len(result.windows), "wall_s": wall, "realtime_factor": factor,
            "hour_s": 3600.0 / factor}


STUDENT_MEL_BINS = 64  # CED's students' input: half AST's 128 mel bins, half the tokens


def student_speeds(base: AST, *, batch: int = DEFAULT_BATCH, repeats: int = DEFAULT_REPEATS,
                   precision: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    """Seconds per clip at batch `batch` (best of `repeats` interleaved rounds) of `base` and of the distillation
    students (`STUDENT_SIZES`, random weights, 16x16 patches at stride 16, on `base`'s input length and classes; each
    on `base`'s mel bins, then, named "<size>@64", on CED's 64 mel bins where `base` has more), all in `precision`
    (auto: what `choose_precision` picks here, once), with GFLOP per 10 s of audio and the speed-up over `base`:
    [{"model", "precision", "parameters", "tokens", "gflop_per_10s", "s_per_clip", "speedup"}], `base` first."""
    torch.manual_seed(seed)
    fdim, tdim = base.config.input_fdim, base.config.input_tdim
    configs = {"base": base.config}
    for bins in [fdim] + ([STUDENT_MEL_BINS] if fdim > STUDENT_MEL_BINS else []):
        for name, size in STUDENT_SIZES.items():
            configs[name if bins == fdim else f"{name}@{bins}"] = ASTConfig(
                model_size=size, fstride=STUDENT_STRIDE, tstride=STUDENT_STRIDE, input_fdim=bins, input_tdim=tdim,
                num_classes=base.config.num_classes)
    models = {name: base if name == "base" else
              AST(config, frontend=dataclasses.replace(base.frontend, num_mel_bins=config.input_fdim)).eval()
              for name, config in configs.items()}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tdim, fdim, generator=gen) * 0.5  # (B, T, F); a 64-bin student reads its first 64
    choice = choose_precision(precision)  # "auto" resolved once, here at the edge: every model runs the same
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runners = {name: to_precision(copy.deepcopy(model), choice, cache=tmp) for name, model in models.items()}
        inputs = {name: x[..., :config.input_fdim].contiguous() for name, config in configs.items()}
        times = interleaved_times({name: (lambda fn=fn, xi=inputs[name]: fn(xi)) for name, fn in runners.items()},
                                  repeats)
    seconds = base.frontend.duration_s
    rows = []
    for name, config in configs.items():
        per_clip = min(times[name]) / batch
        rows.append({"model": name if name != "base" else f"base ({base.config.model_size})",
                     "precision": runners[name].precision, "parameters": config.num_parameters,
                     "tokens": config.num_patches + 2, "gflop_per_10s": ast_flops(config)["total"] / 1e9 * 10 /
                     seconds, "s_per_clip": per_clip})
    for row in rows:
        row["speedup"] = rows[0]["s_per_clip"] / row["s_per_clip"]
    return rows


def format_students(rows: list[dict[str, Any]]) -> str:
    """The students' table of `ast-audio bench --students`."""
    lines = ["distillation students beside the base model (random weights, batch throughput, "
             f"{rows[0]['precision']} for the base):",
             f"  {'model':<18} {'precision':<10} {'params M':>9} {'tokens':>7} {'GFLOP/10 s':>11} {'s/clip':>9} "
             f"{'speed-up':>9}"]
    for r in rows:
        lines.append(f"  {r['model']:<18} {r['precision']:<10} {r['parameters'] / 1e6:>9.2f} {r['tokens']:>7} "
                     f"{r['gflop_per_10s']:>11.1f} {r['s_per_clip']:>9.4g} {r['speedup']:>8.1f}x")
    return "\n".join(lines) + "\n"


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
    if not isinstance(model, AST) or model.precision != "fp32":
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
            variants += transformers_variants(model, Path(tmp), note, skip)

        reference = model(x[:1])
        working = []
        for result, fn in variants:
            if result.name.endswith("compiled"):  # the first calls compile (batch 1 and batch B)
                start = time.perf_counter()
                try:
                    fn(x[:1])
                    fn(x)
                except Exception as exc:  # a backend without a C++ compiler, an op dynamo cannot trace, ...
                    note(f"{result.name}: compilation failed ({first_line(exc)}); left out")
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
