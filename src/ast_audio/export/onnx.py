"""ONNX export of an AST, with or without the Kaldi front end inside the graph, checked against the eager model.

`export_onnx(model, path)` writes a graph with a dynamic batch axis:

- without the front end its input `fbank` is the normalised (B, T, F) log-mel the eager model takes;
- with `with_frontend=True` its input `waveform` is (B, S) raw samples in [-1, 1] at the front end's rate, S dynamic:
  the graph crops to the model's input length, computes the Kaldi fbank (`KaldiFrontend`: framing, DC removal,
  pre-emphasis, Hann window and the DFT folded into one strided convolution, power, mel matmul, log), pads in the
  log-mel domain and normalises, exactly as `FeatureExtractor` does.

A frame model's graph (`ASTConfig.frame_head`) has a second output, `frame_logits` (B, t_dim, C), computed in the
same encoder pass as `logits` (B, C); `OnnxModel.run_both` returns the two.

The labels, front-end and model configs, `multi_label` and how the graph was made are stored in the ONNX
`metadata_props`, so `OnnxModel(path)` (and `ast-audio tag --onnx`) need nothing else. The exporter is torch's
TorchScript-based `torch.onnx.export(..., dynamo=False)`: it exports the AST and the front end in well under a second
for small models, with stable node names (used to keep the front end out of int8 quantization); the dynamo
exporter (`dynamo=True`) also works on the plain model but is ~15x slower to export and is offered as an option.

Every export is checked: the eager model and onnxruntime score generated inputs (noise and tones, and for the
front-end graph also a short and a long clip) and the report gives the max |logit difference| and the top-1
agreement (over the clip logits and, for a frame model, the frame logits too). fp32 graphs that disagree by more
than a tolerance raise `ExportError`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..config import FrontendConfig
from ..errors import ExportError
from .graph import FrameOutputs, WithFrontend, fuse_attention_file, graph_outputs, quantize_graph
from .runtime import FORMAT_VERSION, METADATA_PREFIX, OnnxModel

EXPORT_PRECISIONS = ("fp32", "int8")
DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNormalization is an ONNX op from opset 17 on
# fp32 parity bounds (max |logit difference| vs the eager model) above which an export is refused: the graph alone
# is float32 rounding (measured ~1e-7 on O(1) logits); the in-graph fbank (DFT as one matrix instead of an FFT)
# differs from the eager, torchaudio-rounded fbank by up to ~1e-3 on the quietest log-mel bins (the graph is the
# closer of the two to exact maths), which the model may amplify a little (measured 1.7e-5 on AST-base logits).
FP32_TOLERANCE = 1e-3
FP32_FRONTEND_TOLERANCE = 1e-2


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely onnxruntime reproduces the eager model on generated inputs."""

    path: Path
    precision: str
    with_frontend: bool
    opset: int
    exporter: str
    max_abs_diff: float  # max |onnxruntime logit - eager logit| over the check inputs, clip and frame logits alike
    # (nan if not checked)
    top1_agreement: float  # fraction of check inputs whose arg-max class agrees (nan if not checked)
    inputs: list[str] = field(default_factory=list)  # what the check ran
    input_name: str = "fbank"
    input_shape: tuple[Any, ...] = ()
    size_bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: the file, its input, and the parity numbers."""
        shape = "x".join(str(s) for s in self.input_shape)
        parity = (f"max |logit diff| vs eager {self.max_abs_diff:.2e}, top-1 agreement {self.top1_agreement:.0%} "
                  f"on {len(self.inputs)} generated inputs" if self.inputs else "parity not checked")
        return (f"wrote {self.path} ({self.precision}, input {self.input_name} {shape}, opset {self.opset}, "
                f"{self.size_bytes / 1e6:.1f} MB, {self.exporter} exporter, {self.seconds:.1f} s): {parity}")


def check_exportable(model: nn.Module) -> None:
    """ExportError unless `model` is an fp32 `AST` (not converted to bf16 or int8): what a graph is built from."""
    from ..model import AST

    if not isinstance(model, AST):
        raise ExportError(f"expected an ast_audio AST model, got {type(model).__name__}")
    precision = model.precision
    if precision != "fp32":
        raise ExportError(f"the model runs in {precision}; ONNX export needs the fp32 model (load it with "
                          "precision='fp32' and pass --precision int8 to export for a quantized graph)")
    for name, p in model.named_parameters():
        if p.dtype != torch.float32:
            raise ExportError(f"parameter {name} is {p.dtype}; ONNX export needs float32 weights (load the model "
                              "with precision='fp32')")
    for name, m in model.named_modules():
        if "quantized" in type(m).__module__:
            raise ExportError(f"module {name or 'model'} is a torch quantized {type(m).__name__}; export the fp32 "
                              "model and pass precision='int8' to quantize the graph instead")


def check_output_path(path: Path, force: bool) -> None:
    """ExportError unless `path` can be written: not a folder, not an existing file without `force`, a writable
    folder (checked before a model is loaded or exported)."""
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as model.onnx")
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; choose another output or pass --force to replace it")
    import tempfile

    try:  # a real probe: os.access says yes to root even on read-only or virtual file systems
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc} in {path.parent}; choose another output "
                          "path") from None


def _metadata(model: nn.Module, precision: str, with_frontend: bool, exporter: str) -> dict[str, str]:
    return {
        "format_version": str(FORMAT_VERSION),
        "labels": json.dumps(list(model.labels)),
        "frontend": json.dumps(model.frontend.to_dict()),
        "config": json.dumps(model.config.to_dict()),
        "multi_label": json.dumps(bool(model.multi_label)),
        "with_frontend": json.dumps(bool(with_frontend)),
        "precision": precision,
        "exporter": exporter,
        "torch": torch.__version__,
    }


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(proto, str(path))


def check_waveforms(frontend: FrontendConfig, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(4, input_samples) generated check clips: uniform noise, a 440 Hz + 3 kHz tone pair, a chirp over noise,
    and a quiet, DC-offset noise (exercises the log floor and DC removal)."""
    n, rate = frontend.input_samples, frontend.sample_rate
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / rate
    noise = torch.rand(n, generator=gen, dtype=torch.float64) - 0.5
    tones = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 3000 * t)
    chirp = 0.3 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.05 * torch.randn(n, generator=gen,
                                                                                     dtype=torch.float64)
    quiet = 0.2 + 1e-3 * torch.randn(n, generator=gen, dtype=torch.float64)
    names = ["uniform noise", "440 Hz + 3 kHz tones", "chirp + noise", "quiet noise with DC offset"]
    return torch.stack([noise, tones, chirp, quiet]).float(), names


def _parity(model: nn.Module, onnx_model: OnnxModel, with_frontend: bool) -> tuple[float, float, list[str]]:
    """Eager vs onnxruntime logits on generated clips: (max |diff|, top-1 agreement, input descriptions)."""
    from ..audio.features import FeatureExtractor

    extractor = FeatureExtractor(model.frontend)
    waves, names = check_waveforms(model.frontend)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # (onnx input, eager input)
    if with_frontend:
        batches.append((waves, extractor(waves)))
        n = waves.shape[1]
        for length in (max(n // 2, model.frontend.window_samples), n + n // 3):  # padded and cropped in the graph
            clip = torch.cat([waves[2], waves[1]])[:length]
            batches.append((clip.unsqueeze(0), extractor([clip])))
            names.append(f"chirp+tones of {length} samples")
    else:
        batches.append((extractor(waves), extractor(waves)))
    diffs, agree, total = [], 0, 0
    with torch.inference_mode():
        for onnx_in, eager_in in batches:
            if model.has_frame_head:
                clip, frames = model.forward_both(eager_in)
                expected = clip.numpy()
                got, got_frames = onnx_model.run_both(onnx_in.numpy())
                diffs.append(float(np.abs(got_frames - frames.numpy()).max()))
            else:
                expected = model(eager_in).float().numpy()
                got = onnx_model(onnx_in.numpy())
            diffs.append(float(np.abs(got - expected).max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            total += expected.shape[0]
    return max(diffs), agree / total, names


def export_onnx(model: nn.Module, path: str | os.PathLike, *, precision: str = "fp32", with_frontend: bool = False,
                opset: int | None = None, check: bool = True, force: bool = False, dynamo: bool = False,
                tolerance: float | None = None, fuse_attention: bool = False,
                reduce_range: bool = False) -> ExportReport:
    """Write `model` (an fp32 AST) as an ONNX graph with a dynamic batch axis; see the module docstring.

    Args:
        model: an `AST` in fp32 (as `load_model` returns it with the default precision).
        path: the .onnx file to write (atomically).
        precision: "fp32", or "int8": onnxruntime's dynamic quantization of the MatMuls with constant weights
            (the transformer's linear layers and head; the front end and the patch convolution stay fp32).
        with_frontend: the graph takes raw (B, S) waveforms instead of the normalised (B, T, F) fbank.
        opset: ONNX opset (default 18; at least 17).
        check: compare onnxruntime against the eager model on generated inputs (recommended).
        force: replace an existing `path`.
        dynamo: use torch's dynamo-based exporter instead of the TorchScript-based one (slower; no front end).
        tolerance: fp32 max |logit difference| above which the export is refused (default 1e-3, 1e-2 with the
            front end). int8 graphs are reported, never refused.
        fuse_attention: replace each block's attention subgraph by ONNX Runtime's fused MultiHeadAttention kernel
            (`fuse_attention_nodes`; 1.1x faster end to end on AVX-512, measured in docs/speed.md). The graph then
            needs ONNX Runtime (a com.microsoft op), so it is off for portable exports and on for `runtime_model`.
        reduce_range: int8: quantize weights to 7 bits, which ONNX Runtime recommends on x86 CPUs without VNNI
            (their 8-bit products saturate 16-bit intermediate sums).

    Raises:
        ExportError: a non-fp32 model, unknown precision, opset too old, an unwritable or existing output, or an
            fp32 graph that does not reproduce the model.
    """
    t0 = time.perf_counter()
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)} for ONNX export, got "
                          f"{precision!r}")
    opset = DEFAULT_OPSET if opset is None else opset
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < MIN_OPSET:
        raise ExportError(f"opset {opset!r} is too old: the graph needs ONNX opset {MIN_OPSET} or newer "
                          f"(LayerNormalization); use --opset {DEFAULT_OPSET}")
    max_opset = _max_opset(dynamo)
    if opset > max_opset:
        raise ExportError(f"opset {opset} is newer than this torch's {'dynamo' if dynamo else 'TorchScript'} ONNX "
                          f"exporter supports (up to {max_opset}); use --opset {DEFAULT_OPSET}")
    if dynamo and with_frontend:
        raise ExportError("the front-end graph is exported with the TorchScript-based exporter only; drop dynamo")
    check_exportable(model)
    path = Path(path)
    check_output_path(path, force)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing); "
                          "pip install 'ast-audio[export]'") from None

    from ..utils import atomic_path

    model = model.eval()
    c = model.frontend
    output_names = graph_outputs(model)  # ["logits"], or ["logits", "frame_logits"] for a frame model
    batch_axes = {name: {0: "batch"} for name in output_names}
    if with_frontend:
        module: nn.Module = WithFrontend(model).eval()
        input_name, dummy = "waveform", torch.zeros(1, c.input_samples)
        dummy[0, ::7] = 0.1  # not silence, so nothing data-dependent is folded for the all-zero case
        dynamic_axes = {input_name: {0: "batch", 1: "samples"}, **batch_axes}
        input_shape: tuple[Any, ...] = ("batch", "samples")
    else:
        module = FrameOutputs(model).eval() if model.has_frame_head else model
        input_name, dummy = "fbank", torch.zeros(1, c.target_length, c.num_mel_bins)
        dynamic_axes = {input_name: {0: "batch"}, **batch_axes}
        input_shape = ("batch", c.target_length, c.num_mel_bins)
    exporter = "dynamo" if dynamo else "torchscript"
    with atomic_path(path) as tmp:
        fp32_path = tmp.with_name(tmp.name + ".fp32.onnx") if precision == "int8" else tmp
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer and deprecation notices, nothing actionable for users
                if dynamo:
                    torch.onnx.export(module, (dummy,), str(fp32_path), input_names=[input_name],
                                      output_names=output_names, opset_version=opset, dynamo=True,
                                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                                      external_data=False)
                else:
                    torch.onnx.export(module, (dummy,), str(fp32_path), input_names=[input_name],
                                      output_names=output_names, opset_version=opset, dynamo=False,
                                      dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:
            fp32_path.unlink(missing_ok=True)
            raise ExportError(f"torch.onnx.export failed at opset {opset} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); try --opset {DEFAULT_OPSET}") from exc
        if fuse_attention:
            fuse_attention_file(fp32_path, model.config.num_heads)
        if precision == "int8":
            try:
                quantize_graph(fp32_path, tmp, reduce_range=reduce_range)
            finally:
                fp32_path.unlink(missing_ok=True)
        _set_metadata(tmp, _metadata(model, precision, with_frontend, exporter))
        report = ExportReport(path=path, precision=precision, with_frontend=with_frontend, opset=opset,
                              exporter=exporter, max_abs_diff=float("nan"), top1_agreement=float("nan"),
                              input_name=input_name, input_shape=input_shape)
        if check:
            diff, top1, names = _parity(model, OnnxModel(tmp), with_frontend)
            report.max_abs_diff, report.top1_agreement, report.inputs = diff, top1, names
            limit = tolerance if tolerance is not None else (FP32_FRONTEND_TOLERANCE if with_frontend
                                                              else FP32_TOLERANCE)
            if precision == "fp32" and not diff <= limit:
                raise ExportError(f"the exported graph disagrees with the eager model: max |logit difference| "
                                  f"{diff:.3g} > {limit:g}; nothing was written (report this model/opset)")
        report.size_bytes = tmp.stat().st_size
    report.seconds = time.perf_counter() - t0
    return report

def _max_opset(dynamo: bool) -> int:
    """The newest opset torch's exporter writes (20 for the TorchScript exporter in torch 2.5-2.13)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MAX_OPSET if dynamo else _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # private module: if it moves, let torch.onnx.export decide
        return 10**6
