"""Inference precisions: one name chooses how an `AST` computes (`load_model(..., precision=...)`, `--precision`).

- "fp32": the model as loaded; bit-faithful (logits within 1e-4 of transformers' ASTForAudioClassification).
- "bf16": weights and activations in bfloat16, so matrix products run on oneDNN's bf16 kernels (AVX-512 BF16 /
  AMX on recent x86 CPUs, tensor cores on GPUs). Inputs are cast on entry and logits returned as float32.
- "int8": the Linear layers of the transformer blocks (qkv, proj, fc1, fc2: ~99% of the FLOPs) are quantized to
  int8 with dynamic per-row activation scales; everything else stays fp32.

The model remembers its precision in `model.precision`; `apply_precision` is not reversible (bf16/int8 discard
bits), so load again for another precision.
"""

from __future__ import annotations

from typing import Final

import torch
import torch.nn as nn

from .errors import ConfigError

PRECISIONS: Final = ("fp32", "bf16", "int8")


def check_precision(precision: object) -> str:
    """Return `precision` if it is one of PRECISIONS, else raise a ConfigError saying which are."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype the model's inputs are cast to (that of its first floating parameter)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def apply_precision(model: nn.Module, precision: str) -> nn.Module:
    """Convert an fp32 eval-mode AST to `precision` in place (returns it) and record `model.precision`.

    Raises:
        ConfigError: unknown precision, or a model already converted to another precision.
    """
    precision = check_precision(precision)
    current = getattr(model, "precision", "fp32")
    if current == precision:
        return model
    if current != "fp32":
        raise ConfigError(f"the model is already {current}; load it again to use {precision}")
    model.eval()
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8":
        quantize_linears(model)
    model.precision = precision
    return model


def quantize_linears(model: nn.Module) -> nn.Module:
    """Replace the transformer blocks' nn.Linear layers by dynamically quantized int8 ones (in place).

    The patch embedding (a convolution) and the classifier head stay fp32: together they are <0.5% of the FLOPs
    and the head sets the logits' scale, where rounding would show most.
    """
    import warnings

    from torch.ao.quantization import quantize_dynamic

    blocks = getattr(model, "blocks", model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        quantize_dynamic(blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
