"""The one precision dispatch (`to_precision`) and ONNX Runtime as an inference backend (`runtime_model`).

`to_precision(model, precision)` turns an fp32 AST into what runs in `precision`: the torch precisions (fp32, bf16,
int8) through `ast_audio.model.precision.apply_precision`, the ONNX Runtime ones ("ort-fp32", "ort-int8") as an
`OnnxModule` over a graph built from the model's weights (attention fused, int8 dynamically quantized) and cached on
disk, keyed by a hash of the weights, configs and versions. `load_model(precision=...)` and the benchmarks call it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..model.precision import ORT_PRECISIONS, PrecisionChoice, apply_precision, as_choice, cpu_info
from .onnx import check_exportable, export_onnx
from .runtime import OnnxModel, OnnxModule

log = logging.getLogger(__name__)


def to_precision(model: nn.Module, precision: str | PrecisionChoice = "fp32", *, device: str | torch.device = "cpu",
                 cache: str | os.PathLike | None = None) -> nn.Module | OnnxModule:
    """`model` (an fp32 AST) computing in `precision`, with `.precision` (what runs) and `.precision_choice` (a
    `PrecisionChoice`: what was asked for, what runs, why). `cache`: where ONNX Runtime graphs are kept (default
    `cache_dir()`/onnx).

    `precision`: an explicit name or a `PrecisionChoice` made once at the edge (`choose_precision`, which
    `load_model` calls; "auto" is not chosen again here); fp32/bf16/int8 convert the model in place
    (`apply_precision`), "ort-fp32"/"ort-int8" return an `OnnxModule` running its ONNX Runtime graph
    (`runtime_model`).

    Raises:
        ConfigError: an unknown precision, ONNX Runtime on a GPU, or onnxruntime missing for an ort precision.
    """
    choice = as_choice(precision, device)
    if choice.precision not in ORT_PRECISIONS:
        return apply_precision(model, choice, device=device)
    runtime = runtime_model(model.eval(), choice.precision, cache=cache)
    runtime.precision_choice = choice
    return runtime


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
    if precision not in ORT_PRECISIONS:
        raise ConfigError(f"runtime_model precision must be one of {', '.join(ORT_PRECISIONS)}, got {precision!r}")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"precision {precision} needs onnx and onnxruntime ({exc.name} is missing); "
                          "pip install 'ast-audio[export]', or use --precision auto, fp32 or int8") from None
    check_exportable(model)
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
