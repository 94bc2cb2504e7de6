"""ONNX export of an AST, with or without the Kaldi front end inside the graph, and an onnxruntime runner.

`export_onnx(model, path)` writes a graph with a dynamic batch axis:

- without the front end its input `fbank` is the normalised (B, T, F) log-mel the eager model takes;
- with `with_frontend=True` its input `waveform` is (B, S) raw samples in [-1, 1] at the front end's rate, S dynamic:
  the graph crops to the model's input length, computes the Kaldi fbank (`KaldiFrontend`: framing, DC removal,
  pre-emphasis, Hann window and the DFT folded into one strided convolution, power, mel matmul, log), pads in the
  log-mel domain and normalises, exactly as `FeatureExtractor` does.

The labels, front-end and model configs, `multi_label` and how the graph was made are stored in the ONNX
`metadata_props`, so `OnnxModel(path)` (and `ast-audio tag --onnx`) need nothing else. The exporter is torch's
TorchScript-based `torch.onnx.export(..., dynamo=False)`: it exports the AST and the front end in well under a second
for small models, with stable node names (used to keep the front end out of int8 quantization); the dynamo
exporter (`dynamo=True`) also works on the plain model but is ~15x slower to export and is offered as an option.

Every export is checked: the eager model and onnxruntime score generated inputs (noise and tones, and for the
front-end graph also a short and a long clip) and the report gives the max |logit difference| and the top-1
agreement. fp32 graphs that disagree by more than a tolerance raise `ExportError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..audio.fbank import KALDI_EPSILON, frame_transform
from ..config import ASTConfig, FrontendConfig
from ..errors import AudioInputError, ConfigError, ExportError

EXPORT_PRECISIONS = ("fp32", "int8")
DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNormalization is an ONNX op from opset 17 on
METADATA_PREFIX = "ast_audio."
FORMAT_VERSION = 1
# fp32 parity bounds (max |logit difference| vs the eager model) above which an export is refused: the graph alone
# is float32 rounding (measured ~1e-7 on O(1) logits); the in-graph fbank (DFT as one matrix instead of an FFT)
# differs from the eager, torchaudio-rounded fbank by up to ~1e-3 on the quietest log-mel bins (the graph is the
# closer of the two to exact maths), which the model may amplify a little (measured 1.7e-5 on AST-base logits).
FP32_TOLERANCE = 1e-3
FP32_FRONTEND_TOLERANCE = 1e-2

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# The front end as a graph


class KaldiFrontend(nn.Module):
    """(B, S) waveform -> (B, target_length, F) normalised log-mel, as `FeatureExtractor` computes it, in ops that
    export to ONNX (Conv, Mul, Add, MatMul, Log, Pad, Slice) with a dynamic S.

    Every step from a raw 25 ms frame to the real and imaginary parts of its 512-point DFT (per-frame DC removal,
    pre-emphasis, Hann window, zero-padding, DFT) is linear, so it is one (2K, window) matrix applied with stride
    `hop`: a Conv1d. K counts only the FFT bins some mel filter uses (1..255 of 0..256 for the AST settings).
    """

    def __init__(self, frontend: FrontendConfig) -> None:
        super().__init__()
        self.frontend = frontend
        transform, banks = frame_transform(frontend.sample_rate, frontend.num_mel_bins, frontend.frame_length_ms,
                                           frontend.frame_shift_ms)
        self.hop = frontend.hop_samples
        self.num_bins = banks.shape[0]
        self.register_buffer("kernel", transform.float().unsqueeze(1), persistent=False)  # (2K, 1, window)
        self.register_buffer("banks", banks.float(), persistent=False)  # (K, F)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.frontend
        x = waveform[:, : c.input_samples]  # (B, S) -> (B, <= input_samples): later frames would be cropped anyway
        x = x - x.mean(dim=1, keepdim=True)  # the reference loader's clip DC removal
        spec = nn.functional.conv1d(x.unsqueeze(1), self.kernel, stride=self.hop)  # (B, 1, S) -> (B, 2K, T)
        re, im = spec[:, : self.num_bins], spec[:, self.num_bins:]  # 2 x (B, K, T)
        power = re * re + im * im  # (B, K, T)
        mel = torch.matmul(power.transpose(1, 2), self.banks)  # (B, T, K) @ (K, F) -> (B, T, F)
        logmel = torch.log(torch.clamp(mel, min=KALDI_EPSILON))
        # Pad with target_length zero frames (log-mel 0, as the reference pads), then keep the first target_length:
        # static sizes, so any T works.
        logmel = nn.functional.pad(logmel, (0, 0, 0, c.target_length))[:, : c.target_length]  # (B, target, F)
        return (logmel - c.mean) / (2 * c.std)


class _WithFrontend(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.frontend = KaldiFrontend(model.frontend)
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend(waveform))


# ----------------------------------------------------------------------------------------------------------------
# Export


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely onnxruntime reproduces the eager model on generated inputs."""

    path: Path
    precision: str
    with_frontend: bool
    opset: int
    exporter: str
    max_abs_diff: float  # max |onnxruntime logit - eager logit| over the check inputs (nan if not checked)
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


def _check_model(model: nn.Module) -> None:
    from ..model import AST

    if not isinstance(model, AST):
        raise ExportError(f"expected an ast_audio AST model, got {type(model).__name__}")
    precision = getattr(model, "precision", "fp32")
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


def _check_path(path: Path, force: bool) -> None:
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
    _check_model(model)
    path = Path(path)
    _check_path(path, force)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing); "
                          "pip install 'ast-audio[export]'") from None

    from ..utils import atomic_path

    model = model.eval()
    c = model.frontend
    if with_frontend:
        module: nn.Module = _WithFrontend(model).eval()
        input_name, dummy = "waveform", torch.zeros(1, c.input_samples)
        dummy[0, ::7] = 0.1  # not silence, so nothing data-dependent is folded for the all-zero case
        dynamic_axes = {input_name: {0: "batch", 1: "samples"}, "logits": {0: "batch"}}
        input_shape: tuple[Any, ...] = ("batch", "samples")
    else:
        module = model
        input_name, dummy = "fbank", torch.zeros(1, c.target_length, c.num_mel_bins)
        dynamic_axes = {input_name: {0: "batch"}, "logits": {0: "batch"}}
        input_shape = ("batch", c.target_length, c.num_mel_bins)
    exporter = "dynamo" if dynamo else "torchscript"
    with atomic_path(path) as tmp:
        fp32_path = tmp.with_name(tmp.name + ".fp32.onnx") if precision == "int8" else tmp
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer and deprecation notices, nothing actionable for users
                if dynamo:
                    torch.onnx.export(module, (dummy,), str(fp32_path), input_names=[input_name],
                                      output_names=["logits"], opset_version=opset, dynamo=True,
                                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                                      external_data=False)
                else:
                    torch.onnx.export(module, (dummy,), str(fp32_path), input_names=[input_name],
                                      output_names=["logits"], opset_version=opset, dynamo=False,
                                      dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:
            fp32_path.unlink(missing_ok=True)
            raise ExportError(f"torch.onnx.export failed at opset {opset} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); try --opset {DEFAULT_OPSET}") from exc
        if fuse_attention:
            _fuse_attention_file(fp32_path, model.config.num_heads)
        if precision == "int8":
            try:
                _quantize(fp32_path, tmp, reduce_range=reduce_range)
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


def _quantize(src: Path, dst: Path, reduce_range: bool = False) -> None:
    """onnxruntime dynamic int8 quantization of the transformer's MatMuls whose second input is a constant weight,
    with one scale per output channel of each weight (per-tensor scales measured 1.3x the logit error at the same
    speed, docs/speed.md) and per-batch activation scales.

    Convs (the front end's DFT and the patch embedding) are left fp32, and so are the front end's nodes (its
    mel MatMul): quantizing a power spectrum before a log would cost far more accuracy than it saves time.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    # TorchScript-exporter node names follow the module paths: "/frontend/MatMul", "/model/mlp_head/..." or
    # "/mlp_head/...". The classifier head stays fp32 too, as in the eager int8 model: it sets the logits' scale.
    keep_fp32 = [n.name for n in graph.node if n.name.startswith(("/frontend/", "/mlp_head/", "/model/mlp_head/"))]
    keep_fp32 += [name + "_MatMul" for name in keep_fp32 if name.endswith("Gemm")]  # the quantizer splits Gemms
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" notice on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # DefaultTensorType: shape inference cannot type the outputs of com.microsoft ops (fused attention)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=keep_fp32, per_channel=True, reduce_range=reduce_range,
                             extra_options={"MatMulConstBOnly": True,
                                            "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quiet.setLevel(level)


_ATTENTION_NODE = re.compile(r"^(?P<prefix>(?:/[^/]+)*?/blocks\.(?P<block>\d+)/attn/)(?P<rest>.*)$")


def fuse_attention_nodes(graph: Any, num_heads: int) -> int:
    """Replace each transformer block's attention subgraph in an exported AST `graph` (an onnx GraphProto, edited in
    place) by ONNX Runtime's fused `com.microsoft.MultiHeadAttention` kernel; returns the number of blocks fused.

    The TorchScript exporter names nodes after module paths, so block i's attention is every node named
    `.../blocks.i/attn/...`: the qkv projection (`qkv/MatMul` + `qkv/Add`, kept: it is quantized like the other
    linear layers), then reshape/permute/split, the scaled dot-product attention and the merge of the heads, which
    end in the tensor `proj/MatMul` reads. Those middle nodes become one Split of the (B, N, 3D) qkv tensor into
    q, k and v (B, N, D each; rows q, k, v as in `Attention`) and MultiHeadAttention(q, k, v) -> (B, N, D), whose
    default scale 1/sqrt(D / num_heads) is the model's. Initializers only the removed nodes used are dropped.
    """
    from onnx import helper

    blocks: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        match = _ATTENTION_NODE.match(node.name)
        if match:
            blocks.setdefault(match["prefix"], {})[match["rest"]] = node
    replaced: dict[int, list[Any]] = {}  # id of the qkv Add node -> its replacement nodes
    removed: set[int] = set()
    for prefix, nodes in blocks.items():
        try:
            add, proj = nodes["qkv/Add"], nodes["proj/MatMul"]
        except KeyError:
            raise ExportError(f"cannot fuse the attention of {prefix}: the exported graph has no qkv/Add or "
                              "proj/MatMul node (exporter changed?); export without fusion") from None
        q, k, v = (prefix + f"fused_{name}" for name in "qkv")
        replaced[id(add)] = [
            add,
            helper.make_node("Split", [add.output[0]], [q, k, v], name=prefix + "fused/Split", axis=-1,
                             num_outputs=3),
            helper.make_node("MultiHeadAttention", [q, k, v], [proj.input[0]], name=prefix + "fused/MHA",
                             domain="com.microsoft", num_heads=num_heads),
        ]
        removed |= {id(n) for rest, n in nodes.items() if not rest.startswith(("qkv/", "proj/"))}
    kept = []
    for node in graph.node:
        if id(node) in replaced:
            kept += replaced[id(node)]
        elif id(node) not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return len(blocks)


def _fuse_attention_file(path: Path, num_heads: int) -> None:
    import onnx
    from onnx import helper

    proto = onnx.load(str(path))
    if fuse_attention_nodes(proto.graph, num_heads):
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, str(path))


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime as an inference backend (precision "ort-fp32" / "ort-int8")

RUNTIME_GRAPH_VERSION = 1  # bump when the graph `runtime_model` builds changes, so cached graphs are rebuilt


def cache_dir() -> Path:
    """Where built graphs are kept: $AST_AUDIO_CACHE, else $XDG_CACHE_HOME/ast-audio, else ~/.cache/ast-audio."""
    root = os.environ.get("AST_AUDIO_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ast-audio"


def _graph_key(model: nn.Module, precision: str, reduce_range: bool) -> str:
    """sha256 over everything the graph depends on: weights, configs, labels, precision, the builders' versions."""
    import hashlib

    import onnxruntime

    digest = hashlib.sha256()
    head = {"version": RUNTIME_GRAPH_VERSION, "precision": precision, "reduce_range": reduce_range,
            "config": model.config.to_dict(), "frontend": model.frontend.to_dict(), "labels": list(model.labels),
            "multi_label": bool(model.multi_label), "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


def runtime_model(model: nn.Module, precision: str = "ort-int8", *, threads: int | None = None,
                  cache: str | os.PathLike | None = None) -> OnnxModule:
    """`model` (an fp32 AST) as an ONNX Runtime graph: an `OnnxModule` that tags like the AST, with
    `precision` "ort-fp32" or "ort-int8".

    The graph is exported with attention fused (`fuse_attention_nodes`) and, for int8, dynamically quantized
    (per-channel weights; 7-bit on x86 CPUs without VNNI, as ONNX Runtime advises). Building it takes seconds to
    tens of seconds for AST-base, so it is cached under `cache` (default `cache_dir()`/onnx), keyed by a hash of
    the weights, configs and versions; an unwritable cache falls back to a temporary folder for this process.
    """
    from ..model.precision import ORT_PRECISIONS, cpu_info

    if precision not in ORT_PRECISIONS:
        raise ConfigError(f"runtime_model precision must be one of {', '.join(ORT_PRECISIONS)}, got {precision!r}")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"precision {precision} needs onnx and onnxruntime ({exc.name} is missing); "
                          "pip install 'ast-audio[export]', or use --precision auto, fp32 or int8") from None
    _check_model(model)
    reduce_range = precision == "ort-int8" and cpu_info().x86 and not cpu_info().vnni
    folder = Path(cache) if cache is not None else cache_dir() / "onnx"
    keep_alive = None
    if not _writable(folder):
        import tempfile

        log.info("the graph cache %s is not writable; building in a temporary folder for this process", folder)
        keep_alive = tempfile.TemporaryDirectory(prefix="ast-audio-onnx-")
        folder = Path(keep_alive.name)
    path = folder / f"{_graph_key(model, precision, reduce_range)[:40]}.onnx"
    if not path.is_file():
        log.info("building the ONNX Runtime %s graph for these weights once (cached in %s)", precision, folder)
        export_onnx(model, path, precision=precision.removeprefix("ort-"), check=False, force=True,
                    fuse_attention=True, reduce_range=reduce_range)
    module = OnnxModel(path, threads=threads).as_module()
    module.precision = precision
    module.torch_model = model  # for what needs torch internals (explanations): the fp32 model it was built from
    module._keep_alive = keep_alive  # the temporary folder lives as long as the module
    return module


def _writable(folder: Path) -> bool:
    """True when a file can be created in `folder` (made if missing); a real probe, as os.access says yes to root."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# Running


class OnnxModel:
    """An exported AST graph in an onnxruntime session, with the metadata `export_onnx` stored.

    `model(x)` takes the normalised (B, T, F) fbank, or for a front-end graph (`with_frontend`) raw (B, S) or (S,)
    waveforms at `frontend.sample_rate`, as a numpy array or tensor, and returns (B, C) float32 logits.

    Args:
        path: an .onnx file written by `export_onnx`.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such ONNX file; export one with `ast-audio export CHECKPOINT OUT.onnx`")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no graph-cleaning notices on the user's stderr
        if threads is not None:
            if not (isinstance(threads, int) and threads >= 1):
                raise ConfigError(f"threads must be a positive integer, got {threads!r}")
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"{self.path}: onnxruntime cannot load it ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); export it again") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.labels: tuple[str, ...] = tuple(json.loads(meta[METADATA_PREFIX + "labels"]))
            self.frontend = FrontendConfig.from_dict(json.loads(meta[METADATA_PREFIX + "frontend"]))
            self.config = ASTConfig.from_dict(json.loads(meta[METADATA_PREFIX + "config"]))
            self.multi_label = bool(json.loads(meta[METADATA_PREFIX + "multi_label"]))
            self.with_frontend = bool(json.loads(meta[METADATA_PREFIX + "with_frontend"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{self.path}: not an ast-audio ONNX export (metadata {exc} missing or invalid); "
                              "export it with `ast-audio export`") from None
        self.precision = meta.get(METADATA_PREFIX + "precision", "fp32")
        self.input_name = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, precision={self.precision!r}, with_frontend={self.with_frontend}, "
                f"classes={len(self.labels)})")

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().float().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        c = self.frontend
        if self.with_frontend:
            if x.ndim == 1:
                x = x[None]  # (S,) -> (1, S)
            if x.ndim != 2 or x.shape[1] < c.window_samples:
                raise AudioInputError(f"expected waveforms (B, S) with S >= {c.window_samples} samples at "
                                      f"{c.sample_rate} Hz, got shape {x.shape}")
        elif x.shape[1:] != (c.target_length, c.num_mel_bins) or x.ndim != 3:
            raise AudioInputError(f"expected a normalised fbank (B, {c.target_length}, {c.num_mel_bins}), got shape "
                                  f"{x.shape}; this graph has no front end (export with --with-frontend for one)")
        return self.session.run(None, {self.input_name: x})[0]

    def as_module(self) -> OnnxModule:
        """A stand-in for the torch model that `ast_audio.infer.Tagger` can drive."""
        return OnnxModule(self)


class OnnxModule:
    """Adapter giving an `OnnxModel` the parts of the `AST` interface the Tagger uses: tensor in, tensor out,
    `frontend`, `labels`, `multi_label`, and no-op `eval()` / `to()`. `takes_waveforms` tells the Tagger to pass
    raw windows instead of features when the graph has the front end inside."""

    def __init__(self, onnx_model: OnnxModel) -> None:
        self.onnx = onnx_model
        self.frontend = onnx_model.frontend
        self.labels = onnx_model.labels
        self.multi_label = onnx_model.multi_label
        self.config = onnx_model.config
        self.takes_waveforms = onnx_model.with_frontend
        self.precision = onnx_model.precision
        self.precision_choice = None  # set by ast_audio.precision.apply_precision
        self.torch_model: nn.Module | None = None  # the AST a runtime graph was built from (`runtime_model`)

    def eval(self) -> OnnxModule:
        return self

    def to(self, device: Any = "cpu", *args: Any, **kwargs: Any) -> OnnxModule:
        if torch.device(device).type != "cpu":
            raise ConfigError("ONNX graphs run on the CPU here (onnxruntime's CPU provider); use device='cpu'")
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.onnx(x))


def load_onnx_tagger(path: str | os.PathLike, threads: int | None = None,
                     labels: str | os.PathLike | Sequence[str] | None = None):
    """A `Tagger` running the ONNX graph at `path` (with or without the front end inside); `labels` (a CSV path or
    names) replaces the stored label names."""
    from ..infer.tagger import Tagger

    module = OnnxModel(path, threads=threads).as_module()
    if labels is not None:
        from ..labels import resolve_labels

        names = tuple(resolve_labels(labels))
        if len(names) != len(module.labels):
            raise ConfigError(f"{len(names)} label names given for a graph with {len(module.labels)} classes")
        module.labels = names
    return Tagger(module)  # type: ignore[arg-type]


__all__: Sequence[str] = ("ExportError", "ExportReport", "KaldiFrontend", "OnnxModel", "OnnxModule", "export_onnx",
                          "load_onnx_tagger", "check_waveforms", "fuse_attention_nodes", "runtime_model", "cache_dir")
