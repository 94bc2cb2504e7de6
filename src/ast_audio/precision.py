"""Inference precisions: one name chooses how an `AST` computes (`load_model(..., precision=...)`, `--precision`).

- "fp32": the model as loaded, faithful (logits within 1e-4 of transformers' ASTForAudioClassification, whose
  kernels it shares). `apply_precision(model, "fp32", fuse=True)` opts into `FusedLinear` for fp32 too: 20-30%
  faster here, but oneDNN's summation order moves logits by up to 1.4e-4 on adversarial random 768-wide weights
  (tests/test_hf_parity.py), so it is not the default.
- "bf16": weights and activations in bfloat16, so matrix products run on oneDNN's bf16 kernels (AVX-512 BF16 /
  AMX on recent x86 CPUs). On a CPU with oneDNN bf16 support the transformer blocks' Linear layers also use
  weights pre-packed once into oneDNN's blocked layout, with the MLP's GELU fused into the first product
  (`FusedLinear`). Inputs are cast on entry and logits returned as float32.
- "int8": the Linear layers of the transformer blocks (qkv, proj, fc1, fc2: ~79% of the FLOPs) are quantized to
  int8 (per-tensor weights, dynamic per-batch activation scales, PyTorch's x86/fbgemm kernels); the attention
  products (~21% of the FLOPs) run in bf16 through the fused SDPA kernel when the CPU supports it; the patch
  embedding, LayerNorms and the head stay fp32.

The model remembers its precision in `model.precision`; `apply_precision` is not reversible (bf16/int8 discard
bits), so load again for another precision. See docs/speed.md for measured speed and accuracy of each.
"""

from __future__ import annotations

import warnings
from typing import Final

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError

PRECISIONS: Final = ("fp32", "bf16", "int8")


def check_precision(precision: object) -> str:
    """Return `precision` if it is one of PRECISIONS, else raise a ConfigError saying which are."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def parse_precisions(text: str) -> list[str]:
    """"fp32,bf16" -> ["fp32", "bf16"]; every name checked, duplicates dropped, order kept."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"expected a comma-separated list of precisions ({', '.join(PRECISIONS)}), got {text!r}")
    return list(dict.fromkeys(check_precision(name) for name in names))


def onednn_bf16_available() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX); otherwise bf16 is emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class FusedLinear(nn.Linear):
    """An nn.Linear (same parameters and state-dict keys) whose CPU inference forward runs oneDNN's
    `_linear_pointwise` on a weight reordered once into oneDNN's blocked layout, optionally with GELU fused.

    Why: a plain `F.linear` writes the pre-activation tensor to memory before a separate GELU pass (and may re-lay
    the weight out per call: not checked); prepacking plus fusion made a bf16 AST-base forward 1.15-1.21x faster
    in two same-run comparisons on a loaded machine (docs/speed.md). Off the CPU, with autograd on, or without
    oneDNN it falls back to `F.linear` (+ `F.gelu`).
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (x.device.type == "cpu" and x.dtype == self.weight.dtype and torch.backends.mkldnn.is_available()
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not _tracing())
        if not fast:
            y = F.linear(x, self.weight, self.bias)
            return F.gelu(y) if self.activation == "gelu" else y
        if self.activation == "gelu":  # exact (erf) GELU, as nn.GELU()
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, "none", [], "")

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


def apply_precision(model: nn.Module, precision: str, fuse: bool | None = None) -> nn.Module:
    """Convert an fp32 AST to `precision` in place (returns it, in eval mode) and record `model.precision`.

    Args:
        fuse: fp32 and bf16: use `FusedLinear` (default: never for fp32, which stays on transformers' kernels;
            for bf16 when oneDNN has native bf16 kernels on this CPU).

    Raises:
        ConfigError: unknown precision, or a model already converted to another precision.
    """
    precision = check_precision(precision)
    current = getattr(model, "precision", "fp32")
    if current != "fp32" and current != precision:
        raise ConfigError(f"the model is already {current}; load it again to use {precision}")
    model.eval()
    if current == precision and precision != "fp32":
        return model
    if precision == "fp32":
        if fuse:
            fuse_linears(model)
    elif precision == "bf16":
        model.to(torch.bfloat16)
        if fuse if fuse is not None else onednn_bf16_available():
            fuse_linears(model)
    elif precision == "int8":
        quantize_linears(model)
        if onednn_bf16_available():
            for block in getattr(model, "blocks", []):
                block.attn.sdpa_dtype = torch.bfloat16
    model.precision = precision
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
