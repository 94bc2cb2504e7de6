"""Running an exported AST graph with ONNX Runtime: `OnnxModel` (a session plus the metadata `export_onnx` stored)
and `OnnxModule` (the parts of the `AST` interface a `Tagger` drives: tensor in, logits out, front end, labels).

onnxruntime is imported only when a graph is opened (it is in the `export` extra).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..config import ASTConfig, FrontendConfig
from ..errors import AudioInputError, ConfigError
from ..model.precision import PrecisionChoice

# Keys of the graph's `metadata_props` (written by `ast_audio.export.onnx.export_onnx`, read here).
METADATA_PREFIX = "ast_audio."
FORMAT_VERSION = 1


class OnnxModel:
    """An exported AST graph in an onnxruntime session, with the metadata `export_onnx` stored.

    `model(x)` takes the normalised (B, T, F) fbank, or for a front-end graph (`with_frontend`) raw (B, S) or (S,)
    waveforms at `frontend.sample_rate`, as a numpy array or tensor, and returns (B, C) float32 logits. The graph
    of a frame model (`has_frame_head`) also gives (B, t_dim, C) frame logits: `run_both(x)` returns both.

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
        self.has_frame_head = self.config.frame_head is not None
        outputs = [o.name for o in self.session.get_outputs()]
        if self.has_frame_head and "frame_logits" not in outputs:
            raise ConfigError(f"{self.path}: the metadata describes a frame model but the graph has no frame_logits "
                              "output; export it again with `ast-audio export`")

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, precision={self.precision!r}, with_frontend={self.with_frontend}, "
                f"classes={len(self.labels)})")

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, C) float32 logits."""
        names = ["logits"] if self.has_frame_head else None  # a clip graph's one output (named logits since v1)
        return self.session.run(names, {self.input_name: self._check_input(x)})[0]

    def run_both(self, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B, C) logits and (B, t_dim, C) frame logits of a frame model's graph, from one run."""
        if not self.has_frame_head:
            raise ConfigError(f"{self.path}: this graph is of a clip model (no frame head); it has no frame logits")
        logits, frames = self.session.run(["logits", "frame_logits"], {self.input_name: self._check_input(x)})
        return logits, frames

    def _check_input(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """`x` as a contiguous float32 array of the shape the graph takes, else AudioInputError."""
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
        return x

    def as_module(self) -> OnnxModule:
        """A stand-in for the torch model that `ast_audio.infer.tagger.Tagger` can drive."""
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
        self.has_frame_head = onnx_model.has_frame_head
        self.takes_waveforms = onnx_model.with_frontend
        self.precision = onnx_model.precision
        # Why this precision runs (set by `ast_audio.export.backend.to_precision`; None for a graph opened by path).
        self.precision_choice: PrecisionChoice | None = None
        self.torch_model: nn.Module | None = None  # the AST a runtime graph was built from (`runtime_model`)

    def eval(self) -> OnnxModule:
        return self

    def to(self, device: Any = "cpu", *args: Any, **kwargs: Any) -> OnnxModule:
        if torch.device(device).type != "cpu":
            raise ConfigError("ONNX graphs run on the CPU here (onnxruntime's CPU provider); use device='cpu'")
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.onnx(x))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) logits and (B, t_dim, C) frame logits of a frame model, from one run (as `AST.forward_both`)."""
        logits, frames = self.onnx.run_both(x)
        return torch.from_numpy(logits), torch.from_numpy(frames)

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, t_dim, C) frame logits of a frame model (as `AST.forward_frames`)."""
        return self.forward_both(x)[1]
