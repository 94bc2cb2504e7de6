"""One entry point for every checkpoint format: `load_model(source, ...)`, plus `save_model` and `save_hf`.

Formats recognised (spec §1.4, §1.5, §4.3, §11):
1. native: a folder with `model.safetensors` and `config.json` {"format": "ast-audio", ...};
2. reference AST `.pth` (`module.v.*` / `module.mlp_head.*`); the config is inferred from the tensor shapes and
   the stride from the file name (`audioset_12_12_0.4467.pth`) or the `fstride`/`tstride` keywords (default 10);
   a bare native state dict (`torch.save(model.state_dict())`) is read the same way;
3. transformers AST: a folder with config.json (`model_type` "audio-spectrogram-transformer") and
   model.safetensors or pytorch_model.bin (v4 or v5 key spelling), or a hub id such as
   "MIT/ast-finetuned-audioset-10-10-0.4593" (cache first, see `hub.download`);
4. timm / DeiT / ViT ImageNet checkpoints (.pth/.pt/.bin, optionally `{"model": ...}`, or .safetensors), adapted to
   the AST config given by the keywords;
5. any of the above adapted to another length, stride or class count: keywords that change the loaded config go
   through `adapt_model`.

The readers are `formats.py`, safe tensor reading `tensors.py`, the key maps and the one key/shape check
`convert.py`, weight surgery `adapt.py`.

Pickles are always read with `torch.load(weights_only=True)`, which refuses files that carry code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from ..config import FrameHeadConfig, FrontendConfig, default_frontend
from ..errors import CheckpointError, ConfigError
from ..export.backend import to_precision
from ..export.runtime import OnnxModule
from ..labels import default_labels, resolve_labels
from ..model import AST
from ..model.precision import PrecisionChoice, choose_precision
from ..utils import atomic_path, state_nbytes
from . import hub
from .adapt import MODEL_KEYWORDS, adapt_model, override_frontend
from .convert import check_state_fits, expected_shapes, load_state_exact, native_to_hf
from .formats import (
    FORMATS_HELP,
    HF_MODEL_TYPE,
    HF_PREPROCESSOR,
    NATIVE_CONFIG,
    NATIVE_FORMAT,
    NATIVE_VERSION,
    NATIVE_WEIGHTS,
    Loaded,
    read_file,
    read_folder,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Writing


def save_model(model: AST, folder: str | Path) -> Path:
    """Write `model` in the project's own format (atomically): folder/model.safetensors + folder/config.json."""
    folder = Path(folder)
    meta = {
        "format": NATIVE_FORMAT,
        "version": NATIVE_VERSION,
        "model": model.config.to_dict(),
        "frontend": model.frontend.to_dict(),
        "labels": list(model.labels),
        "multi_label": model.multi_label,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder, size_hint=state_nbytes(state)) as tmp:  # the size names the space a full disk lacks
        tmp.mkdir()
        save_file(state, str(tmp / NATIVE_WEIGHTS), metadata={"format": NATIVE_FORMAT})
        (tmp / NATIVE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def save_hf(model: AST, folder: str | Path) -> Path:
    """Write `model` as a transformers `ASTForAudioClassification` folder (atomically).

    Writes config.json, preprocessor_config.json (ASTFeatureExtractor) and model.safetensors in the v4 key
    spelling of the hub checkpoints, so `ASTForAudioClassification.from_pretrained(folder)` loads it with no
    missing or unexpected keys.

    transformers uses one LayerNorm eps for the blocks and the head; `model.config.layer_norm_eps` is written.
    A model whose `head_norm_eps` differs (the reference's 1e-5 head vs 1e-6 blocks) therefore gives logits that
    differ slightly in transformers (measured 6e-6 to 1.4e-5 on O(1) random-weight logits, see
    tests/test_hf_parity.py).

    A frame model is refused rather than written without its frame head: a folder that silently dropped the
    head would tag but give no frame scores, and look like the model it came from.

    Raises:
        ConfigError: the model cannot be expressed in transformers' ASTConfig (a frame head, non-square patches,
            mean pooling, a non-integer MLP width).
    """
    config = model.config
    if config.frame_head is not None:
        raise ConfigError("transformers' ASTForAudioClassification has no frame head, so this frame model cannot be "
                          "written in its format; keep the ast-audio folder (save_model), or export ONNX for "
                          "runtimes without ast-audio")
    if config.fshape != config.tshape:
        raise ConfigError(f"transformers' AST only has square patches (patch_size); this model uses "
                          f"{config.fshape}x{config.tshape}, so it can only be saved with save_model")
    if config.pooling != "tokens":
        raise ConfigError(f"transformers' AST pools the cls and dist tokens; this model uses pooling="
                          f"{config.pooling!r}, so it can only be saved with save_model")
    intermediate = int(config.embed_dim * config.mlp_ratio)
    if intermediate != config.embed_dim * config.mlp_ratio:
        raise ConfigError(f"mlp_ratio {config.mlp_ratio} x embed_dim {config.embed_dim} is not an integer width")
    id2label = {str(i): name for i, name in enumerate(model.labels)}
    hf_config = {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["ASTForAudioClassification"],
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps,
        "patch_size": config.fshape,
        "qkv_bias": True,
        "frequency_stride": config.fstride,
        "time_stride": config.tstride,
        "max_length": config.input_tdim,
        "num_mel_bins": config.input_fdim,
        "id2label": id2label,
        "label2id": {name: i for i, name in enumerate(model.labels)},
        "problem_type": "multi_label_classification" if model.multi_label else "single_label_classification",
    }
    frontend = model.frontend
    preprocessor = {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "sampling_rate": frontend.sample_rate,
        "num_mel_bins": frontend.num_mel_bins,
        "max_length": frontend.target_length,
        "mean": frontend.mean,
        "std": frontend.std,
        "padding_value": 0.0,
        "do_normalize": True,
        "return_attention_mask": False,
    }
    # clone: the q/k/v blocks are views of one qkv tensor, and safetensors refuses shared storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in native_to_hf(model.state_dict()).items()}
    folder = Path(folder)
    with atomic_path(folder, size_hint=state_nbytes(state)) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        (tmp / HF_PREPROCESSOR).write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def _build(loaded: Loaded, overrides: dict[str, Any]) -> AST:
    """The model the loaded weights describe, then adapted when the keywords change its config."""
    config = loaded.config
    if loaded.kind == "imagenet":  # the reader built the config from model_size; what it built says "custom" when
        overrides = {k: v for k, v in overrides.items() if k != "model_size"}  # the weights are not that size
    fields = {f.name for f in dataclasses.fields(config)}
    structural = any(k not in MODEL_KEYWORDS and (k not in fields or getattr(config, k) != v)
                     for k, v in overrides.items())
    frontend, labels, multi_label = loaded.frontend, loaded.labels, loaded.multi_label
    # A trained head without names (a reference .pth, a transformers config without id2label): 527 outputs are
    # AudioSet's. An ImageNet checkpoint's head is new, so its outputs mean nothing yet and keep "class_i".
    if labels is None and loaded.kind != "imagenet" and overrides.get("labels") is None:
        labels = default_labels(config.num_classes)
        if labels is not None:
            log.info("%s stores no class names; using the %d AudioSet names (pass --labels / labels= to override)",
                     loaded.source, len(labels))
    if not structural:  # labels / multi_label / frontend only: no weight surgery needed
        if overrides.get("labels") is not None:
            labels = resolve_labels(overrides["labels"])
        multi_label = overrides.get("multi_label", multi_label)
        frontend = override_frontend(frontend or default_frontend(config), overrides.get("frontend"))
    # Names and shapes first, against a meta-device model: a file whose config asks for more than its weights hold
    # is refused here, before its tensors are read or the model is allocated.
    check_state_fits(expected_shapes(config), loaded.state, loaded.source)
    state = loaded.read() if loaded.read is not None else loaded.state
    model = AST(config, frontend=frontend, labels=labels, multi_label=multi_label)
    load_state_exact(model, state, loaded.source)
    if structural:
        model = adapt_model(model, **overrides)
    return model


def load_model(source: str | os.PathLike, *,
               input_tdim: int | None = None, input_fdim: int | None = None, fstride: int | None = None,
               tstride: int | None = None, num_classes: int | None = None,
               pooling: Literal["tokens", "mean"] | None = None, num_heads: int | None = None,
               model_size: str | None = None, layer_norm_eps: float | None = None, head_norm_eps: float | None = None,
               labels: str | os.PathLike | Sequence[str] | None = None, multi_label: bool | None = None,
               frontend: FrontendConfig | Mapping[str, Any] | None = None,
               in_chans_reduce: Literal["sum", "mean"] | None = None, frame_head: FrameHeadConfig | None = None,
               precision: str | PrecisionChoice = "fp32", device: str | torch.device = "cpu",
               torch_only: bool = False) -> AST | OnnxModule:
    """Load any supported checkpoint as an `AST` in eval mode, computing in `precision`.

    Every keyword left as None keeps what the checkpoint says.

    Args:
        source: a folder (ast-audio or transformers), a checkpoint file (reference AST .pth, timm/DeiT ImageNet
            .pth/.pt/.bin/.safetensors), or a Hugging Face hub id such as "MIT/ast-finetuned-audioset-10-10-0.4593".
        input_tdim, input_fdim: model input in frames x mel bins; the position embedding is cut or interpolated
            to the new patch grid (`adapt_model`) and the front end's target_length / num_mel_bins follow.
        fstride, tstride: patch strides; the weights are adapted to them. For a reference .pth, whose stride is not
            stored, they give the checkpoint's own stride unless the file name carries it
            (`audioset_12_12_0.4467.pth`; default 10).
        num_classes: classifier outputs; a different count gets a freshly initialised head.
        pooling: "tokens" (mean of the cls and dist outputs, AST) or "mean" (of the patch tokens).
        num_heads: a reference .pth's head count when its heads are not 64-dim (it is not stored).
        model_size: the reference size name an ImageNet checkpoint is built as ("tiny224", "small224",
            "base224", "base384"; default: the size matching its width and grid).
        layer_norm_eps, head_norm_eps: LayerNorm epsilons of the blocks / final norm and of the head.
        labels: class names (a CSV path or a list) replacing the stored ones.
        multi_label: True for sigmoid scores (independent classes), False for softmax (one class per clip).
        frontend: a FrontendConfig replacing the stored front end, or a dict of its fields to change.
        in_chans_reduce: ImageNet checkpoints only: how RGB patch kernels become one channel, "sum" (the reference
            code, default) or "mean" (the paper's wording).
        frame_head: a `FrameHeadConfig` for a frame model built on the checkpoint's encoder (a new, freshly
            initialised frame head, unless the checkpoint's is the same config); a frame checkpoint loads with its
            own head without it. A saved frame model's head type and config are read from its config.json.
        precision: "fp32" (default, faithful), "bf16", "int8", "ort-fp32", "ort-int8", or "auto" (the fastest
            measured path for this CPU or GPU; see `ast_audio.model.precision`), or a `PrecisionChoice` already
            made. The model records what runs in `model.precision` and why in `model.precision_choice`. The ort
            precisions return an `OnnxModule` (`ast_audio.export.backend.to_precision`).
        device: where the model will run; decides what "auto" picks and travels with the choice
            (`model.precision_choice.device`; the model is loaded on the CPU).
        torch_only: "auto" picks only torch precisions (explanations need the torch model).

    This is the one place a precision is chosen on the load path (`choose_precision`); the conversion below
    receives the choice.

    For ImageNet checkpoints the keywords describe the AST to build (default: the size matching the checkpoint,
    527 classes, 1024 x 128 input, stride 10).

    Raises:
        CheckpointError: missing, unreadable or unrecognised source, or weights that do not fit.
        ConfigError: overrides that cannot be applied (e.g. another patch kernel or width).
    """
    choice = choose_precision(precision, device=device, torch_only=torch_only)  # fail before reading a large file
    given = dict(input_tdim=input_tdim, input_fdim=input_fdim, fstride=fstride, tstride=tstride,
                 num_classes=num_classes, pooling=pooling, num_heads=num_heads, model_size=model_size,
                 layer_norm_eps=layer_norm_eps, head_norm_eps=head_norm_eps, labels=labels, multi_label=multi_label,
                 frontend=frontend, frame_head=frame_head)
    overrides = {k: v for k, v in given.items() if v is not None}
    path = Path(source)
    if path.is_dir():
        loaded = read_folder(path)
    elif path.is_file():
        loaded = read_file(path, {**overrides, "in_chans_reduce": in_chans_reduce or "sum"})
    elif isinstance(source, str) and hub.looks_like_repo_id(source):
        loaded = read_folder(hub.download(source))
    else:
        raise CheckpointError(f"{source}: no such file or folder; {FORMATS_HELP}")
    if in_chans_reduce is not None and loaded.kind != "imagenet":
        raise ConfigError("in_chans_reduce applies only to ImageNet (timm/DeiT/ViT) checkpoints")
    return to_precision(_build(loaded, overrides).eval(), choice)
