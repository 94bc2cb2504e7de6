"""The peer paths `ast-audio bench` times against ast-audio's own on the same weights: transformers'
ASTForAudioClassification (fp32 SDPA, and bf16 where the CPU has it natively) and transformers' own model exported
to ONNX and run by ONNX Runtime (fp32, and int8 by `quantize_dynamic`'s defaults). transformers, onnx and
onnxruntime are imported only here, when the peers are timed."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import ASTConfig
from ..errors import ConfigError
from ..model import AST
from ..model.precision import onnxruntime_available
from ..weights.checkpoint import save_hf
from .timing import Variant, VariantResult, emulated_reason, first_line


def transformers_variants(model: AST, folder: Path, log: Callable[[str], None],
                           skip: Callable[[str, str], None]) -> list[Variant]:
    """transformers' AST on the same weights: fp32 (SDPA), bf16 where native, and its own ONNX export run by ONNX
    Runtime in fp32 and int8 (`quantize_dynamic` with its defaults, as a user would)."""
    try:
        import transformers
        from transformers import ASTForAudioClassification
    except ImportError as exc:
        log(f"transformers: not installed ({exc}); skipping the comparison")
        return []
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
        skip("transformers onnxruntime fp32/int8", f"export failed ({first_line(exc)})")
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
