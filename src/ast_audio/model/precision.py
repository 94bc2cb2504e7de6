"""Inference precisions: one name chooses how an `AST` computes (`load_model(..., precision=...)`, `--precision`).

- "fp32": the model as loaded, faithful (logits within 1e-4 of transformers' ASTForAudioClassification, whose
  kernels it shares). `apply_precision(model, "fp32", fuse=True)` opts into `FusedLinear` for fp32 too: 20-30%
  faster on one AMX machine, but oneDNN's summation order moves logits by up to 1.4e-4 on adversarial random
  768-wide weights (tests/test_hf_parity.py), so it is not the default.
- "bf16": weights and activations in bfloat16, so matrix products run on oneDNN's bf16 kernels. Fast only where
  the CPU has native bf16 (AVX512-BF16, AMX) or on a GPU; elsewhere oneDNN emulates it about 100x slower than fp32,
  which `apply_precision` says in a warning. With native bf16 the transformer blocks' Linear layers also use weights
  pre-packed once into oneDNN's blocked layout, with the MLP's GELU fused into the first product (`FusedLinear`).
  Inputs are cast on entry and logits returned as float32.
- "int8": the Linear layers of the transformer blocks (qkv, proj, fc1, fc2: ~79% of the FLOPs) are quantized to
  int8 (per-tensor weights, dynamic per-batch activation scales, PyTorch's x86/fbgemm kernels); the attention
  products (~21% of the FLOPs) run in bf16 through the fused SDPA kernel when the CPU has native bf16, else in
  fp32; the patch embedding, LayerNorms and the head stay fp32.
- "ort-fp32", "ort-int8": the model exported to an ONNX graph (attention fused into ONNX Runtime's
  MultiHeadAttention kernel; for int8 the linear layers dynamically quantized, per-channel weights) and run by
  ONNX Runtime's CPU kernels (`ast_audio.export.backend.runtime_model`). The graph is built once per set of weights
  and cached on disk. Needs the `export` extra (onnx, onnxruntime). The result is an `OnnxModule`, which tags, detects
  events and serves like an AST but has no torch internals (no explanation maps, no training). This module only
  names them (`PRECISIONS`, `choose_precision`); `ast_audio.export.backend.to_precision` builds them.
- "auto": the fastest of these whose accuracy against fp32 is measured (docs/speed.md), chosen from what the CPU
  runs natively as torch and the OS report it (`cpu_info`), never from a timing: `choose_precision`. Which one it
  picked and why is `model.precision` and `model.precision_choice`.

This module is the typed home of the decision: `PrecisionChoice` (requested, what runs, why) is made once by
`choose_precision` and recorded on the model. `apply_precision` (torch precisions) is not reversible (bf16/int8
discard bits), so load again for another precision.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import warnings
from dataclasses import dataclass
from typing import Final

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import AstAudioWarning, ConfigError
from .names import ORT_PRECISIONS, PRECISION_CHOICES, PRECISIONS, TORCH_PRECISIONS


def check_precision(precision: object, allow_auto: bool = True) -> str:
    """Return `precision` if it is one of PRECISION_CHOICES (PRECISIONS without `allow_auto`), else raise a
    ConfigError saying which are."""
    allowed = PRECISION_CHOICES if allow_auto else PRECISIONS
    if not isinstance(precision, str) or precision not in allowed:
        raise ConfigError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return precision


def parse_precisions(text: str) -> list[str]:
    """"fp32,bf16" -> ["fp32", "bf16"]; every name checked, duplicates dropped, order kept."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"expected a comma-separated list of precisions ({', '.join(PRECISION_CHOICES)}), got "
                          f"{text!r}")
    return list(dict.fromkeys(check_precision(name) for name in names))


# ----------------------------------------------------------------------------------------------------------------
# What this CPU runs natively, and what auto picks


@dataclass(frozen=True)
class CpuInfo:
    """What this CPU runs natively, as torch and the OS report it (nothing is timed).

    `capability` is torch's vector ISA (honours ATEN_CPU_CAPABILITY) and `native_bf16` whether oneDNN has bf16
    kernels (honours ONEDNN_MAX_CPU_ISA), so `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` makes a newer CPU
    report itself as AVX2. `flags` are the OS's CPU flags (/proc/cpuinfo on Linux; empty elsewhere): they tell AMX
    and VNNI apart, which torch does not report, and are what ONNX Runtime's own dispatch sees.
    """

    machine: str  # platform.machine(): x86_64, AMD64, aarch64, arm64, ...
    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "DEFAULT", "SVE256", ...
    native_bf16: bool
    flags: frozenset[str] = frozenset()
    name: str = ""

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def arm(self) -> bool:
        return self.machine.lower() in ("aarch64", "arm64") or self.machine.lower().startswith("armv")

    @property
    def amx(self) -> bool:
        """AMX bf16 tiles that oneDNN may use (Sapphire Rapids and later)."""
        return self.native_bf16 and self.capability == "AVX512" and "amx_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX512-VNNI or AVX-VNNI): int8 products without 16-bit saturation."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def cpu_class(self) -> str:
        """"amx", "avx512-bf16", "avx512", "avx2", "arm" or "other": the classes docs/speed.md measures."""
        if self.x86 and self.capability == "AVX512":
            return "amx" if self.amx else "avx512-bf16" if self.native_bf16 else "avx512"
        if self.x86 and self.capability == "AVX2":
            return "avx2"
        return "arm" if self.arm else "other"

    def describe(self) -> str:
        """One line: the CPU, torch's capability and the features that decide the precision."""
        features = [f"torch {self.capability}", f"native bf16 {'yes' if self.native_bf16 else 'no'}"]
        if self.x86:
            features += [f"AMX {'yes' if self.amx else 'no'}", f"VNNI {'yes' if self.vnni else 'no'}"]
        return f"{self.name or self.machine} ({self.machine}; {', '.join(features)}; class {self.cpu_class})"


def parse_cpuinfo(text: str) -> tuple[frozenset[str], str]:
    """(flags, model name) of the first processor in /proc/cpuinfo text ("flags" on x86, "Features" on ARM)."""
    flags, name = frozenset(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
        elif key in ("model name", "cpu model") and not name:
            name = value.strip()
        if flags and name:
            break
    return flags, name


def _os_cpu_flags() -> tuple[frozenset[str], str]:
    """(flags, model name) from /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read(1 << 20))
    except OSError:
        return frozenset(), ""


def onednn_bf16_available() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX); otherwise bf16 is emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's `CpuInfo` (read once per process)."""
    flags, name = _os_cpu_flags()
    return CpuInfo(machine=platform.machine() or "unknown", capability=torch.backends.cpu.get_cpu_capability(),
                   native_bf16=onednn_bf16_available(), flags=flags, name=name or platform.processor())


def onnxruntime_available() -> bool:
    """True when the ONNX Runtime paths can run (onnx and onnxruntime importable: the `export` extra)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


# What auto picks per CPU class, and why. Measured on the classes this project's machines have (docs/speed.md,
# `ast-audio bench`); a class nobody has measured gets fp32, which is faithful and never slow by surprise.
# Each entry: (with ONNX Runtime installed, without it, reason).
AUTO_BY_CLASS: Final[dict[str, tuple[str, str, str]]] = {
    "amx": ("bf16", "bf16", "AMX bf16 tiles: bf16 measured fastest (3.8x fp32, 2.2x int8), "
            "99.75% top-1 agreement with fp32"),
    "avx512-bf16": ("ort-int8", "int8", "AVX512-BF16 without AMX: bf16 runs at only 2x the fp32 rate, the int8 "
                    "VNNI products at 4x; ONNX Runtime int8 measured fastest (2.6x fp32), 100% top-1 agreement"),
    "avx512": ("ort-int8", "int8", "AVX-512 without bf16 (bf16 would be emulated): int8 products are the fast "
               "path; ONNX Runtime int8 faster than torch int8"),
    "avx2": ("ort-int8", "int8", "AVX2 only (bf16 would be emulated ~100x slower): ONNX Runtime int8 measured "
             "fastest (1.9x fp32, 1.26x torch int8)"),
    "arm": ("fp32", "fp32", "ARM: no fast path measured yet, fp32 is faithful"),
    "other": ("fp32", "fp32", "no fast path known for this CPU, fp32 is faithful"),
}


@dataclass(frozen=True)
class PrecisionChoice:
    """Which precision runs, what was asked for, why (one line), and the device it was chosen for: made once at the
    edge (`choose_precision`, called by `load_model`) and passed down, so the conversion never picks again."""

    requested: str  # "auto" or an explicit precision
    precision: str  # one of PRECISIONS
    reason: str
    device: str = "cpu"  # where the model runs ("cpu", "cuda", "cuda:1"); the choice is only valid there

    def describe(self) -> str:
        head = f"auto -> {self.precision}" if self.requested == "auto" else self.precision
        return f"precision {head}: {self.reason}"


def choose_precision(requested: str | PrecisionChoice = "auto", *, device: str | torch.device = "cpu",
                     cpu: CpuInfo | None = None, onnxruntime: bool | None = None, cuda_bf16: bool | None = None,
                     torch_only: bool = False) -> PrecisionChoice:
    """Resolve `requested` ("auto" or a precision) for `device` into the precision that runs, with the reason.

    auto: on CUDA the GPU's bf16 (fp32 where it has none); on the CPU, by `CpuInfo.cpu_class` from
    AUTO_BY_CLASS (the ONNX Runtime entry only when onnxruntime is installed). `torch_only` limits the choice to
    torch precisions that keep autograd-free torch internals usable (explanations): bf16 where native, else fp32.
    `cpu`, `onnxruntime` and `cuda_bf16` default to this machine's; tests pass fakes. A `PrecisionChoice` (already
    made) is returned as it is.
    """
    if isinstance(requested, PrecisionChoice):
        return requested
    requested = check_precision(requested)
    if requested != "auto":
        return as_choice(requested, device)
    return dataclasses.replace(_choose_auto(torch.device(device), cpu, onnxruntime, cuda_bf16, torch_only),
                               device=str(torch.device(device)))


def as_choice(precision: str | PrecisionChoice, device: str | torch.device = "cpu") -> PrecisionChoice:
    """`precision` as a PrecisionChoice for `device` without choosing: a choice as it is, an explicit name as
    requested. "auto" must have been resolved at the edge (`choose_precision`; `load_model` does it)."""
    if isinstance(precision, PrecisionChoice):
        return precision
    precision = check_precision(precision)
    if precision == "auto":
        raise ConfigError("precision auto must be resolved first: pass choose_precision('auto', device=...) or load "
                          "the model with load_model(precision='auto')")
    device = torch.device(device)
    if device.type != "cpu" and precision in ORT_PRECISIONS:
        raise ConfigError(f"precision {precision} runs ONNX Runtime on the CPU; use --precision auto, fp32 or "
                          f"bf16 on {device.type}")
    return PrecisionChoice(precision, precision, "as requested", str(device))


def _choose_auto(device: torch.device, cpu: CpuInfo | None, onnxruntime: bool | None, cuda_bf16: bool | None,
                 torch_only: bool) -> PrecisionChoice:
    """What "auto" runs on `device` (see `choose_precision`)."""
    if device.type == "cuda":
        if cuda_bf16 is None:
            cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if cuda_bf16:
            return PrecisionChoice("auto", "bf16", "CUDA GPU with bf16 tensor cores")
        return PrecisionChoice("auto", "fp32", "CUDA GPU without bf16")
    if device.type != "cpu":
        return PrecisionChoice("auto", "fp32", f"no fast path measured on {device.type}")
    cpu = cpu if cpu is not None else cpu_info()
    if torch_only:
        if cpu.native_bf16:
            return PrecisionChoice("auto", "bf16", f"{cpu.cpu_class}: native bf16 (explanations need torch)")
        return PrecisionChoice("auto", "fp32", f"{cpu.cpu_class}: no native bf16 (explanations need torch)")
    with_ort, without_ort, reason = AUTO_BY_CLASS[cpu.cpu_class]
    onnxruntime = onnxruntime_available() if onnxruntime is None else onnxruntime
    if with_ort in ORT_PRECISIONS and not onnxruntime:
        return PrecisionChoice("auto", without_ort, f"{cpu.cpu_class}: ONNX Runtime is not installed, so torch "
                               f"{without_ort}; pip install 'ast-audio[export]' for the faster ort-int8")
    return PrecisionChoice("auto", with_ort, f"{cpu.cpu_class}: {reason}")


def warn_if_emulated(precision: str, device: torch.device | str = "cpu", cpu: CpuInfo | None = None) -> bool:
    """Warn (once per process and message) when `precision` would be emulated on this CPU; True if it would."""
    if precision != "bf16" or torch.device(device).type != "cpu":
        return False
    cpu = cpu if cpu is not None else cpu_info()
    if cpu.native_bf16:
        return False
    alternative = choose_precision("auto", cpu=cpu).precision
    warnings.warn(f"bf16 is emulated on this CPU ({cpu.cpu_class}, no AVX512-BF16/AMX) and runs about 100x slower "
                  f"than fp32; use --precision auto ({alternative} here) or fp32", AstAudioWarning, stacklevel=3)
    return True


# ----------------------------------------------------------------------------------------------------------------
# The bf16/int8 building blocks


class FusedLinear(nn.Linear):
    """An nn.Linear (same parameters and state-dict keys) whose CPU inference forward runs oneDNN's
    `_linear_pointwise` on a weight reordered once into oneDNN's blocked layout, optionally with GELU fused.

    Why: a plain `F.linear` writes the pre-activation tensor to memory before a separate GELU pass (and may re-lay
    the weight out per call: not checked); prepacking plus fusion made a bf16 AST-base forward 1.15-1.21x faster
    in two same-run comparisons on a loaded machine (docs/speed.md). Off the CPU, with autograd on, or without
    oneDNN, or where oneDNN cannot pack this dtype on this CPU (bf16 without AVX512-BF16: `fallback` then holds
    oneDNN's reason) it falls back to `F.linear` (+ `F.gelu`), which computes the same function.
    """

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        if activation not in ("none", "gelu"):
            raise ConfigError(f"FusedLinear activation must be 'none' or 'gelu', got {activation!r}")
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device="meta", dtype=linear.weight.dtype)
        self.weight = linear.weight
        self.bias = linear.bias
        self.activation = activation
        self._packed: torch.Tensor | None = None
        self._packed_key: tuple[int, int, torch.dtype] | None = None
        self.fallback: str | None = None  # why the packed path is not used, once it failed

    def _packed_weight(self) -> torch.Tensor:
        try:
            version = self.weight._version
        except RuntimeError:  # an inference tensor (made under inference_mode) has no version counter
            version = -1
        key = (self.weight.data_ptr(), version, self.weight.dtype)
        if self._packed_key != key:  # (re)pack after loading new weights or changing dtype
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
            self._packed_key = key
        return self._packed

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.activation == "gelu" else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (self.fallback is None and x.device.type == "cpu" and x.dtype == self.weight.dtype
                and torch.backends.mkldnn.is_available()
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not _tracing())
        if not fast:
            return self._plain(x)
        try:
            packed = self._packed_weight()
        except RuntimeError as exc:  # e.g. "bf16 path needs the cpu support avx_ne_convert or avx512bw, ..."
            self.fallback = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return self._plain(x)
        if self.activation == "gelu":  # exact (erf) GELU, as nn.GELU()
            return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"

    def __getstate__(self) -> dict:
        """Copies and pickles drop the packed cache (an opaque oneDNN tensor for fp32); it is rebuilt on use."""
        state = dict(self.__dict__)
        state["_packed"], state["_packed_key"] = None, None
        return state


def _tracing() -> bool:
    """True while torch.jit / torch.onnx trace or dynamo compiles: they get the plain ops (exportable, and
    inductor does its own packing)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def fuse_linears(model: nn.Module) -> nn.Module:
    """Swap each block's qkv/proj/fc1/fc2 for `FusedLinear` (fc1 with GELU fused, the separate act removed).
    Idempotent; parameters and state-dict keys are unchanged."""
    for block in getattr(model, "blocks", []):
        attn, mlp = block.attn, block.mlp
        if isinstance(attn.qkv, FusedLinear):
            continue
        attn.qkv, attn.proj = FusedLinear(attn.qkv), FusedLinear(attn.proj)
        if isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none":
            mlp.fc1, mlp.act = FusedLinear(mlp.fc1, "gelu"), nn.Identity()
        else:
            mlp.fc1 = FusedLinear(mlp.fc1)
        mlp.fc2 = FusedLinear(mlp.fc2)
    return model


def unfuse_linears(model: nn.Module) -> nn.Module:
    """Undo `fuse_linears`: plain nn.Linear layers (sharing the parameters) and a separate GELU again."""
    for block in getattr(model, "blocks", []):
        attn, mlp = block.attn, block.mlp
        for owner, name in ((attn, "qkv"), (attn, "proj"), (mlp, "fc1"), (mlp, "fc2")):
            layer = getattr(owner, name)
            if isinstance(layer, FusedLinear):
                plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                  device="meta", dtype=layer.weight.dtype)
                plain.weight, plain.bias = layer.weight, layer.bias
                setattr(owner, name, plain)
                if layer.activation == "gelu":
                    mlp.act = nn.GELU()
    return model


def quantize_linears(model: nn.Module) -> nn.Module:
    """Replace the transformer blocks' nn.Linear layers by dynamically quantized int8 ones (in place).

    The patch embedding (a convolution) and the classifier head stay fp32: together they are <0.5% of the FLOPs
    and the head sets the logits' scale, where rounding would show most.
    """
    from torch.ao.quantization import quantize_dynamic

    unfuse_linears(model)  # quantize_dynamic matches the exact nn.Linear type
    blocks = getattr(model, "blocks", model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        quantize_dynamic(blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def apply_precision(model: nn.Module, precision: str | PrecisionChoice, fuse: bool | None = None,
                    device: str | torch.device = "cpu") -> nn.Module:
    """Convert an fp32 AST to a torch precision (fp32, bf16 or int8) in place and return it in eval mode, with
    `model.precision` (what runs) and `model.precision_choice` (a `PrecisionChoice`: what was asked for, what runs,
    why).

    `precision`: an explicit name or a `PrecisionChoice` made at the edge (`choose_precision`); "auto" is refused
    here (it is chosen once, by `load_model`). bf16 on a CPU without native bf16 works but
    warns that it is emulated. The ONNX Runtime precisions are not torch models: `ast_audio.export.backend.to_precision`
    is the dispatch that handles every precision (it calls this function for the torch ones).

    Args:
        fuse: fp32 and bf16: use `FusedLinear` (default: never for fp32, which stays on transformers' kernels;
            for bf16 when oneDNN has native bf16 kernels on this CPU).
        device: where the model will run (decides what auto picks; the model is not moved).

    Raises:
        ConfigError: unknown precision, an ONNX Runtime one, or a model already converted to another precision.
    """
    choice = as_choice(precision, device)
    precision = choice.precision
    if precision not in TORCH_PRECISIONS:
        raise ConfigError(f"precision {precision} runs ONNX Runtime, not torch; convert with "
                          "ast_audio.export.backend.to_precision (load_model(precision=...) does)")
    current = model.precision
    if current != "fp32" and current != precision:
        raise ConfigError(f"the model is already {current}; load it again to use {precision}")
    model.eval()
    if current == precision and precision != "fp32":
        return model
    if precision == "fp32":
        if fuse:
            fuse_linears(model)
    elif precision == "bf16":
        emulated = warn_if_emulated("bf16", device)
        model.to(torch.bfloat16)
        if fuse if fuse is not None else (onednn_bf16_available() and not emulated):
            fuse_linears(model)
    elif precision == "int8":
        quantize_linears(model)
        if onednn_bf16_available():
            for block in getattr(model, "blocks", []):
                block.attn.sdpa_dtype = torch.bfloat16
    model.precision = precision
    model.precision_choice = choice
    return model


def compile_model(model: nn.Module) -> nn.Module:
    """Compile `model.forward` with TorchInductor (weights frozen as constants, oneDNN-packed), in place.

    Costs a one-off compilation (18-25 s for AST-base on 2 cores) and recompiles for each new batch shape; it was
    7-13% slower than the eager bf16 `FusedLinear` path here (docs/speed.md), so it is opt-in
    (`ast-audio bench --compile`).
    Use the model under `torch.inference_mode()` / `torch.no_grad()`.
    """
    model.forward = torch.compile(model.forward, options={"freezing": True})
    model.compiled = True
    return model
