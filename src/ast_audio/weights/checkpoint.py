"""One entry point for every checkpoint format: `load_model(source, **overrides)`, plus `save_model` and `save_hf`.

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

Pickles are always read with `torch.load(weights_only=True)`, which refuses files that carry code.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    ESC50_MEAN,
    ESC50_STD,
    MODEL_SIZES,
    SPEECHCOMMANDS_MEAN,
    SPEECHCOMMANDS_STD,
    ASTConfig,
    FrontendConfig,
)
from ..errors import CheckpointError, ConfigError
from ..model import AST
from ..utils import atomic_path, state_nbytes
from . import hub
from .adapt import MODEL_KEYWORDS, adapt_model, from_imagenet, override_frontend, unwrap_state_dict
from .convert import StateDict, hf_to_native, is_hf_state_dict, is_native_key, native_to_hf, reference_to_native

NATIVE_FORMAT = "ast-audio"
NATIVE_VERSION = 1
NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"

HF_MODEL_TYPE = "audio-spectrogram-transformer"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_PREPROCESSOR = "preprocessor_config.json"
# transformers' ASTConfig defaults (spec §11), used for fields a config.json leaves out.
HF_DEFAULTS: dict[str, Any] = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, patch_size=16,
                                   qkv_bias=True, frequency_stride=10, time_stride=10, max_length=1024,
                                   num_mel_bins=128)

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
REFERENCE_FDIM = 128  # every reference recipe uses 128 mel bins (spec §2.1)
REFERENCE_HEAD_DIM = 64  # all DeiT sizes use 64-dim heads (spec §1.1)
# Input lengths of the reference recipes, preferred when several lengths give the same patch grid.
STANDARD_TDIMS = (1024, 512, 128)
# `audioset_12_12_0.4467.pth`, `speechcommands_10_10_0.9812.pth`: <name>_<fstride>_<tstride>_<score>.
_STRIDE_IN_NAME = re.compile(r"_(\d+)_(\d+)_\d+(?:\.\d+)?")

_FORMATS_HELP = ("expected an ast-audio folder (config.json + model.safetensors), a reference AST .pth, a "
                 "transformers AST folder or hub id, or a timm/DeiT ImageNet checkpoint")


@dataclass
class _Loaded:
    """What a format reader produces, before overrides: a config and matching native weights."""

    kind: str  # "native", "reference", "hf" or "imagenet"
    config: ASTConfig
    state: StateDict
    source: str
    frontend: FrontendConfig | None = None
    labels: list[str] | tuple[str, ...] | None = None
    multi_label: bool = True


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

    Raises:
        ConfigError: the model cannot be expressed in transformers' ASTConfig (non-square patches, mean pooling,
            a non-integer MLP width).
    """
    config = model.config
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
# Reading helpers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a pickle read with weights_only=True, as a flat {name: tensor} dict."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path}: cannot read safetensors weights ({exc}); the file is corrupt or "
                                  "incomplete, download or export it again") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise CheckpointError(f"{path}: refused to load: the pickle contains Python objects, not just tensors "
                                  "(only weights_only=True loading is allowed, as such files can run code); "
                                  "re-save it as a plain state dict or as safetensors") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file); "
                              "download it again or check the path") from None
    except Exception as exc:  # zip errors, truncated files, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                              "download it again or check the path") from None
    state = unwrap_state_dict(obj)
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), optionally under 'model', got "
                              f"{type(obj).__name__}")
    return dict(state)


def load_state_exact(model: AST, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, raising a CheckpointError that names the first mismatching keys/shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the model: missing {missing[:4]}"
                              f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                              f"{'...' if len(unexpected) > 4 else ''}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=True)


def default_frontend(config: ASTConfig, sample_rate: int = 16000) -> FrontendConfig:
    """The reference recipe's front end for this input length: AudioSet statistics, Speech Commands for 128
    frames, ESC-50 for 512 (spec §2.1)."""
    mean, std = {128: (SPEECHCOMMANDS_MEAN, SPEECHCOMMANDS_STD),
                 512: (ESC50_MEAN, ESC50_STD)}.get(config.input_tdim, (AUDIOSET_MEAN, AUDIOSET_STD))
    return FrontendConfig(sample_rate=sample_rate, num_mel_bins=config.input_fdim, target_length=config.input_tdim,
                          mean=mean, std=std)


def _model_size(embed_dim: int, grid_side: int | None = None) -> str:
    """The reference size name for a width (and ImageNet grid side, when known); base384 when none matches."""
    for name, (dim, _, _, side) in MODEL_SIZES.items():
        if dim == embed_dim and (grid_side is None or side == grid_side):
            return "base384" if dim == 768 and grid_side is None else name
    return "base384"


def _count_blocks(state: Mapping[str, torch.Tensor], source: str) -> int:
    indices = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if sorted(indices) != list(range(len(indices))):
        raise CheckpointError(f"{source}: transformer blocks {sorted(indices)} are not numbered 0..n-1")
    return len(indices)


def _require(state: Mapping[str, torch.Tensor], keys: tuple[str, ...], source: str, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{source}: {what} lacks {missing}; the file is incomplete or of another model")


def stride_from_filename(name: str) -> tuple[int, int] | None:
    """(fstride, tstride) parsed from a reference file name such as `audioset_12_12_0.4467.pth`, else None."""
    match = _STRIDE_IN_NAME.search(Path(name).stem)
    return (int(match[1]), int(match[2])) if match else None


# ----------------------------------------------------------------------------------------------------------------
# Format readers: each returns a config plus native weights that fit it exactly


def _read_native(folder: Path, meta: dict[str, Any]) -> _Loaded:
    if meta.get("version") != NATIVE_VERSION:
        raise CheckpointError(f"{folder}: ast-audio checkpoint version {meta.get('version')!r} is not supported "
                              f"(this build reads version {NATIVE_VERSION}); upgrade ast-audio")
    try:
        config = ASTConfig.from_dict(meta["model"])
        frontend = FrontendConfig.from_dict(meta["frontend"])
        labels, multi_label = meta["labels"], meta["multi_label"]
    except KeyError as exc:
        raise CheckpointError(f"{folder / NATIVE_CONFIG}: missing field {exc}") from None
    except ConfigError as exc:
        raise CheckpointError(f"{folder / NATIVE_CONFIG}: invalid config ({exc})") from None
    if (frontend.num_mel_bins, frontend.target_length) != (config.input_fdim, config.input_tdim):
        raise CheckpointError(f"{folder / NATIVE_CONFIG}: front end ({frontend.target_length} frames x "
                              f"{frontend.num_mel_bins} bins) does not match the model input ({config.input_tdim} x "
                              f"{config.input_fdim}); the file was edited or is corrupt")
    if not (folder / NATIVE_WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: {NATIVE_WEIGHTS} is missing next to config.json; save the model again")
    state = _read_tensors(folder / NATIVE_WEIGHTS)
    return _Loaded("native", config, state, str(folder), frontend, labels, multi_label)


def _read_reference(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> _Loaded:
    """A reference AST state dict: infer the architecture from the shapes (the file stores no config)."""
    source = str(path)
    _require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight",
                     "mlp_head.1.weight"), source, "the AST checkpoint")
    embed_dim = state["cls_token"].shape[-1]
    depth = _count_blocks(state, source)
    conv = state["patch_embed.proj.weight"]
    if conv.dim() != 4 or conv.shape[:2] != (embed_dim, 1):
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {tuple(conv.shape)}, expected "
                              f"({embed_dim}, 1, fshape, tshape)")
    fshape, tshape = conv.shape[2], conv.shape[3]
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]

    num_heads = overrides.get("num_heads")
    if num_heads is None:
        if embed_dim % REFERENCE_HEAD_DIM:
            raise CheckpointError(f"{source}: cannot infer the head count of a {embed_dim}-wide model (the reference "
                                  f"sizes use {REFERENCE_HEAD_DIM}-dim heads); pass num_heads=")
        num_heads = embed_dim // REFERENCE_HEAD_DIM

    # The stride is not stored: take it from the file name, else the keywords (they then describe the file).
    strides = stride_from_filename(path.name)
    if strides is None:
        strides = (overrides.get("fstride", 10), overrides.get("tstride", 10))
    fstride, tstride = strides
    f_dim = (REFERENCE_FDIM - fshape) // fstride + 1
    num_patches = state["pos_embed"].shape[1] - 2
    if num_patches <= 0 or num_patches % f_dim:
        raise CheckpointError(f"{source}: pos_embed holds {num_patches} patches, not a multiple of the {f_dim} "
                              f"frequency rows of {REFERENCE_FDIM} mel bins at fstride {fstride}; pass the "
                              "fstride=/tstride= the checkpoint was trained with")
    t_dim = num_patches // f_dim

    def t_dim_of(tdim: int) -> int:
        return (tdim - tshape) // tstride + 1

    # Any length in a range of tstride frames gives this grid: prefer the caller's, then the recipes' lengths.
    candidates = [overrides.get("input_tdim"), *STANDARD_TDIMS]
    input_tdim = next((n for n in candidates if isinstance(n, int) and n >= tshape and t_dim_of(n) == t_dim),
                      (t_dim - 1) * tstride + tshape)
    try:
        config = ASTConfig(model_size=_model_size(embed_dim), embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           mlp_ratio=hidden / embed_dim, fshape=fshape, tshape=tshape, fstride=fstride,
                           tstride=tstride, input_fdim=REFERENCE_FDIM, input_tdim=input_tdim,
                           num_classes=state["mlp_head.1.weight"].shape[0])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the shapes give an impossible config ({exc})") from None
    return _Loaded("reference", config, state, source, default_frontend(config))


def _read_hf(folder: Path, hf_config: dict[str, Any]) -> _Loaded:
    """A transformers AST folder (config.json + weights, optional preprocessor_config.json)."""
    source = str(folder)
    get = {**HF_DEFAULTS, **{k: v for k, v in hf_config.items() if v is not None}}
    if get["hidden_act"] != "gelu":
        raise CheckpointError(f"{source}: hidden_act {get['hidden_act']!r} is not supported (AST uses exact 'gelu')")
    if not get["qkv_bias"]:
        raise CheckpointError(f"{source}: qkv_bias=false is not supported (AST's qkv projection has a bias)")
    weights = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        sharded = any(folder.glob("*.index.json"))
        raise CheckpointError(f"{source}: no {' or '.join(HF_WEIGHTS)} next to config.json"
                              + ("; sharded checkpoints are not supported, re-save with a larger max_shard_size"
                                 if sharded else "; download the weights too"))
    raw = _read_tensors(weights)
    if not is_hf_state_dict(raw):
        raise CheckpointError(f"{weights}: no audio_spectrogram_transformer.* keys; not a transformers AST checkpoint")
    try:
        state = hf_to_native(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights}: {exc}") from None
    _require(state, ("mlp_head.1.weight",), source, "the transformers checkpoint (an ASTForAudioClassification)")

    dim, intermediate = get["hidden_size"], get["intermediate_size"]
    num_classes = state["mlp_head.1.weight"].shape[0]
    labels = None
    if isinstance(hf_config.get("id2label"), dict):
        try:
            id2label = {int(k): str(v) for k, v in hf_config["id2label"].items()}
        except ValueError:
            raise CheckpointError(f"{source}/config.json: id2label keys must be integers") from None
        if sorted(id2label) != list(range(num_classes)):
            raise CheckpointError(f"{source}/config.json: id2label has {len(id2label)} entries but the classifier "
                                  f"has {num_classes} outputs")
        labels = [id2label[i] for i in range(num_classes)]
    eps = float(get["layer_norm_eps"])
    try:
        config = ASTConfig(model_size=_model_size(dim), embed_dim=dim, depth=get["num_hidden_layers"],
                           num_heads=get["num_attention_heads"], mlp_ratio=intermediate / dim,
                           fshape=get["patch_size"], tshape=get["patch_size"], fstride=get["frequency_stride"],
                           tstride=get["time_stride"], input_fdim=get["num_mel_bins"], input_tdim=get["max_length"],
                           num_classes=num_classes, layer_norm_eps=eps, head_norm_eps=eps)  # one eps, as in HF
    except ConfigError as exc:
        raise CheckpointError(f"{source}/config.json: impossible AST config ({exc})") from None
    if int(dim * config.mlp_ratio) != intermediate:
        raise CheckpointError(f"{source}/config.json: intermediate_size {intermediate} is not expressible as "
                              f"mlp_ratio x hidden_size {dim}")

    frontend = default_frontend(config)
    if (folder / HF_PREPROCESSOR).is_file():
        pre = _read_json(folder / HF_PREPROCESSOR)
        try:
            frontend = frontend.replace(sample_rate=int(pre.get("sampling_rate", frontend.sample_rate)),
                                        mean=float(pre.get("mean", frontend.mean)),
                                        std=float(pre.get("std", frontend.std)))
        except (TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"{folder / HF_PREPROCESSOR}: invalid feature extractor settings ({exc})") from None
    multi_label = hf_config.get("problem_type") != "single_label_classification"
    return _Loaded("hf", config, state, source, frontend, labels, multi_label)


def _read_imagenet(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> _Loaded:
    """A timm ViT/DeiT ImageNet state dict, adapted to the config the keywords describe (spec §1.4)."""
    source = str(path)
    _require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight"), source, "the ImageNet checkpoint")
    dim = state["patch_embed.proj.weight"].shape[0]
    num_prefix = 2 if "dist_token" in state else 1
    side = math.isqrt(max(state["pos_embed"].shape[1] - num_prefix, 0))
    model_size = overrides.get("model_size", _model_size(dim, side))
    size_dim, size_heads, _, _ = MODEL_SIZES.get(model_size, (None, None, None, None))
    fields = set(ASTConfig.__dataclass_fields__)
    kwargs: dict[str, Any] = dict(model_size=model_size, embed_dim=dim, depth=_count_blocks(state, source),
                                  num_heads=size_heads if size_dim == dim else max(dim // REFERENCE_HEAD_DIM, 1),
                                  num_classes=527)
    kwargs.update({k: v for k, v in overrides.items() if k in fields})
    config = ASTConfig(**kwargs)
    native = from_imagenet(state, config, overrides.get("in_chans_reduce", "sum"))
    return _Loaded("imagenet", config, native, source, default_frontend(config))


def _read_file(path: Path, overrides: Mapping[str, Any]) -> _Loaded:
    if path.suffix not in (*PICKLE_SUFFIXES, ".safetensors"):
        raise CheckpointError(f"{path}: unknown file type {path.suffix!r}; {_FORMATS_HELP} "
                              f"(files: {', '.join(PICKLE_SUFFIXES)}, .safetensors)")
    state = _read_tensors(path)
    names = [k.removeprefix("module.") for k in state]
    if any(k.startswith("v.") for k in names) and any(k.startswith("mlp_head.") for k in names):
        try:
            native = reference_to_native(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return _read_reference(native, path, overrides)
    conv = state.get("patch_embed.proj.weight")
    if conv is not None and conv.dim() == 4 and conv.shape[1] == 3:
        return _read_imagenet(state, path, overrides)
    if conv is not None and all(is_native_key(k) for k in state) and "mlp_head.1.weight" in state:
        return _read_reference(state, path, overrides)  # a bare AST.state_dict()
    if is_hf_state_dict(state):
        raise CheckpointError(f"{path}: transformers AST weights need their folder (with config.json); pass the "
                              "folder instead of the file")
    raise CheckpointError(f"{path}: unrecognised keys {sorted(state)[:4]}...; {_FORMATS_HELP}")


def _read_folder(folder: Path) -> _Loaded:
    config_path = folder / NATIVE_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: folder has no config.json; {_FORMATS_HELP}")
    meta = _read_json(config_path)
    if meta.get("format") == NATIVE_FORMAT:
        return _read_native(folder, meta)
    if meta.get("model_type") == HF_MODEL_TYPE:
        return _read_hf(folder, meta)
    found = meta.get("model_type") or meta.get("format")
    raise CheckpointError(f"{config_path}: neither an ast-audio config (format 'ast-audio') nor a transformers AST "
                          f"config (model_type '{HF_MODEL_TYPE}'), found {found!r}")


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def _build(loaded: _Loaded, overrides: dict[str, Any]) -> AST:
    """The model the loaded weights describe, then adapted when the keywords change its config."""
    from ..labels import resolve_labels

    config = loaded.config
    fields = config.to_dict()
    structural = any(k not in MODEL_KEYWORDS and (k not in fields or fields[k] != v) for k, v in overrides.items())
    frontend, labels, multi_label = loaded.frontend, loaded.labels, loaded.multi_label
    if not structural:  # labels / multi_label / frontend only: no weight surgery needed
        if overrides.get("labels") is not None:
            labels = resolve_labels(overrides["labels"])
        multi_label = overrides.get("multi_label", multi_label)
        frontend = override_frontend(frontend or default_frontend(config), overrides.get("frontend"))
    model = AST(config, frontend=frontend, labels=labels, multi_label=multi_label)
    load_state_exact(model, loaded.state, loaded.source)
    if structural:
        model = adapt_model(model, **overrides)
    return model


def load_model(source: str | os.PathLike, *, precision: str = "fp32", **overrides: Any) -> AST:
    """Load any supported checkpoint as an `AST` in eval mode, computing in `precision`.

    Args:
        source: a folder (ast-audio or transformers), a checkpoint file (reference AST .pth, timm/DeiT ImageNet
            .pth/.pt/.bin/.safetensors), or a Hugging Face hub id such as "MIT/ast-finetuned-audioset-10-10-0.4593".
        overrides: ASTConfig field names (input_tdim, input_fdim, fstride, tstride, num_classes, pooling, ...);
            the weights are adapted to them (`adapt_model`). For ImageNet checkpoints they describe the AST to build
            (default: the size matching the checkpoint, 527 classes), plus `in_chans_reduce` ("sum" or "mean").
            For reference .pth files, whose stride is not stored, `fstride`/`tstride` give the checkpoint's stride
            unless the file name carries it (`audioset_12_12_0.4467.pth`), and `num_heads` its head count when it
            is not 64-dim heads. Extra keywords: `labels` (CSV path or list of names), `multi_label`, `frontend`
            (FrontendConfig or dict of its fields).
        precision: "fp32" (default, faithful), "bf16" or "int8" (see `ast_audio.precision`); the model records it
            in `model.precision`.

    Raises:
        CheckpointError: missing, unreadable or unrecognised source, or weights that do not fit.
        ConfigError: overrides that cannot be applied (e.g. another patch kernel or width).
    """
    from ..precision import apply_precision, check_precision

    check_precision(precision)  # fail before reading a large file
    overrides = dict(overrides)
    path = Path(source)
    reduce_mode = overrides.pop("in_chans_reduce", None)
    if path.is_dir():
        loaded = _read_folder(path)
    elif path.is_file():
        loaded = _read_file(path, {**overrides, "in_chans_reduce": reduce_mode or "sum"})
    elif isinstance(source, str) and hub.looks_like_repo_id(source):
        loaded = _read_folder(hub.download(source))
    else:
        raise CheckpointError(f"{source}: no such file or folder; {_FORMATS_HELP}")
    if reduce_mode is not None and loaded.kind != "imagenet":
        raise ConfigError("in_chans_reduce applies only to ImageNet (timm/DeiT/ViT) checkpoints")
    return apply_precision(_build(loaded, overrides).eval(), precision)
