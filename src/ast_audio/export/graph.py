"""The parts of an exported AST graph that torch's exporter does not make by itself.

- `KaldiFrontend`: the Kaldi fbank front end as ONNX-exportable ops (framing, DC removal, pre-emphasis, Hann window
  and the DFT folded into one strided convolution, power, mel matmul, log), padded and normalised exactly as
  `FeatureExtractor` does, so a graph can take raw waveforms;
- `graph_outputs` / `FrameOutputs`: a frame model's graph has a second output, `frame_logits` (B, t_dim, C), from
  the same encoder pass as `logits`;
- `fuse_attention_nodes`: each block's attention subgraph replaced by ONNX Runtime's fused MultiHeadAttention kernel;
- `quantize_graph`: ONNX Runtime's dynamic int8 quantization of the transformer's matrix products.

`ast_audio.export.onnx.export_onnx` puts them together.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..audio.fbank import KALDI_EPSILON, frame_transform
from ..config import FrontendConfig
from ..errors import ExportError


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


def graph_outputs(model: nn.Module) -> list[str]:
    """The output names of `model`'s graph: "logits" (B, C), and for a frame model "frame_logits" (B, t_dim, C)."""
    return ["logits", "frame_logits"] if getattr(model, "has_frame_head", False) else ["logits"]


def model_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """What the graph of `model` returns for input `x`: its logits, or (logits, frame logits) from one encoder
    pass for a frame model (`AST.forward_both`), in the order of `graph_outputs`."""
    return model.forward_both(x) if getattr(model, "has_frame_head", False) else model(x)


class WithFrontend(nn.Module):
    """`model` behind the `KaldiFrontend`: (B, S) waveforms -> (B, C) logits (and (B, t_dim, C) frame logits for a
    frame model): the graph `with_frontend` exports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.frontend = KaldiFrontend(model.frontend)
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return model_outputs(self.model, self.frontend(waveform))


class FrameOutputs(nn.Module):
    """A frame model with both outputs: (B, T, F) fbank -> (B, C) logits and (B, t_dim, C) frame logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_both(fbank)


# ----------------------------------------------------------------------------------------------------------------
# Graph surgery: int8 quantization and fused attention


def quantize_graph(src: Path, dst: Path, reduce_range: bool = False) -> None:
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
    # "/mlp_head/...". The classifier head stays fp32 too, as in the eager int8 model: it sets the logits' scale;
    # so does a frame head ("/model/frame_head/..."), which the eager int8 model also leaves in fp32.
    heads = ("/frontend/", "/mlp_head/", "/model/mlp_head/", "/frame_head/", "/model/frame_head/")
    keep_fp32 = [n.name for n in graph.node if n.name.startswith(heads)]
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


def fuse_attention_file(path: Path, num_heads: int) -> None:
    import onnx
    from onnx import helper

    proto = onnx.load(str(path))
    if fuse_attention_nodes(proto.graph, num_heads):
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, str(path))
