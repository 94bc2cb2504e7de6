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
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    ESC50_MEAN,
    ESC50_STD,
    MAX_DEPTH,
    MAX_EMBED_DIM,
    MAX_FRAMES,
    MAX_MEL_BINS,
    MAX_MLP_RATIO,
    MAX_NORM_EPS,
    MODEL_SIZES,
    SPEECHCOMMANDS_MEAN,
    SPEECHCOMMANDS_STD,
    ASTConfig,
    FrontendConfig,
    check_float,
    check_int,
    short_repr,
)
from ..errors import CheckpointError, ConfigError
from ..model import AST
from ..utils import atomic_path, count_non_finite, state_nbytes
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
# Integer fields of transformers' ASTConfig and their upper bounds (the ASTConfig bound of the field each becomes;
# ASTConfig then checks how they fit together).
HF_INT_FIELDS: dict[str, int] = dict(hidden_size=MAX_EMBED_DIM, num_hidden_layers=MAX_DEPTH,
                                     num_attention_heads=MAX_EMBED_DIM,
                                     intermediate_size=int(MAX_EMBED_DIM * MAX_MLP_RATIO), patch_size=MAX_MEL_BINS,
                                     frequency_stride=MAX_MEL_BINS, time_stride=MAX_FRAMES, max_length=MAX_FRAMES,
                                     num_mel_bins=MAX_MEL_BINS)

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
REFERENCE_FDIM = 128  # every reference recipe uses 128 mel bins (spec §2.1)
REFERENCE_HEAD_DIM = 64  # all DeiT sizes use 64-dim heads (spec §1.1)
# Input lengths of the reference recipes, preferred when several lengths give the same patch grid.
STANDARD_TDIMS = (1024, 512, 128)
# `audioset_12_12_0.4467.pth`, `speechcommands_10_10_0.9812.pth`: <name>_<fstride>_<tstride>_<score>.
_STRIDE_IN_NAME = re.compile(r"_(\d{1,4})_(\d{1,4})_\d+(?:\.\d+)?")

_FORMATS_HELP = ("expected an ast-audio folder (config.json + model.safetensors), a reference AST .pth, a "
                 "transformers AST folder or hub id, or a timm/DeiT ImageNet checkpoint")


@dataclass
class _Loaded:
    """What a format reader produces, before overrides: a config and matching native weights.

    `state` holds the weights, or, when `read` is set, empty meta tensors of their shapes (from a safetensors
    header): `_build` checks them against the config before `read()` reads the data and a model is allocated.
    """

    kind: str  # "native", "reference", "hf" or "imagenet"
    config: ASTConfig
    state: StateDict
    source: str
    frontend: FrontendConfig | None = None
    labels: list[str] | tuple[str, ...] | None = None
    multi_label: bool = True
    read: Callable[[], StateDict] | None = None


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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or an integer too long to parse; RecursionError: crafted deep nesting
        raise CheckpointError(f"{path}: not a readable JSON config ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# Weights are floating point; integer, bool, float8 or quantised tensors would be silently cast (or not loadable)
# into the float32 model, so they are refused by name.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_SAFETENSORS_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_FLOAT_DTYPES_TEXT = "float32, float16, bfloat16 or float64"


def _dtype_refused(source: str | Path, name: str, dtype: object) -> CheckpointError:
    return CheckpointError(f"{source}: tensor {name} has dtype {dtype}; expected floating-point weights "
                           f"({_FLOAT_DTYPES_TEXT}); quantised or integer checkpoints are not supported, re-save the "
                           "float weights")


def _check_tensors(state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Every tensor dense floating point on the CPU, and finite once cast to float32, the dtype the model holds
    (float64 1e300 is finite in the file but infinite in the model); one-line CheckpointError naming the first
    offending tensor by its name in the file."""
    for name, tensor in state.items():
        if tensor.dtype not in FLOAT_DTYPES or tensor.is_quantized:
            raise _dtype_refused(source, name, tensor.dtype)
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise CheckpointError(f"{source}: tensor {name} is a {tensor.layout} tensor on {tensor.device}; expected "
                                  "dense weights as torch.save(model.state_dict()) writes them")
        bad = count_non_finite(tensor.to(torch.float32))
        if bad:
            raise CheckpointError(f"{source}: tensor {name} holds {bad} NaN or infinite value(s) "
                                  "(as float32); the checkpoint is broken (e.g. saved after training diverged), use "
                                  "another copy or an earlier checkpoint")


def _read_header(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as empty meta tensors of the stored shapes and dtypes, from its header only.

    Nothing is read or allocated beyond the JSON header, so a config can be checked against the weights' shapes
    before a model is built (safetensors itself checks that the header's offsets fit the file).
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            entries = {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: cannot read safetensors weights ({str(exc)[:200]}); the file is corrupt or "
                              "incomplete, download or export it again") from None
    state = {}
    for name, (dtype, shape) in entries.items():
        if dtype not in _SAFETENSORS_FLOAT_DTYPES:
            raise _dtype_refused(path, name, dtype)
        state[name] = torch.empty(shape, dtype=_SAFETENSORS_FLOAT_DTYPES[dtype], device="meta")
    return state


# torch's weights-only unpickler names a refused callable as "Unsupported global: GLOBAL io.open" (torch <= 2.12)
# or "unsupported GLOBAL posix.system whose module ..." (2.13); the spelling is not an API, so match loosely, and
# when it does not match, look for the callables in the pickle itself (`_pickled_callables`).
_REFUSED_GLOBAL = re.compile(r"unsupported\s+global\W*(?:global\s+)?([\w.]+)", re.IGNORECASE)
# What a tensor-only torch.save pickle refers to; anything else is a callable that unpickling would run.
_TENSOR_PICKLE_GLOBALS = re.compile(r"(torch\.[\w.]+|collections\.OrderedDict|_codecs\.encode)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_SAFE_COPY_HINT = ("get a safe copy: a .safetensors checkpoint from its source, or, only if you trust where the file "
                   "comes from, re-save its state dict as a plain torch.save/safetensors file on a trusted machine "
                   "and `ast-audio convert` that")


def _pickled_callables(path: Path) -> list[str]:
    """The module.name of every callable a pickle (plain, or the data.pkl of a torch.save zip) refers to, beyond
    those of plain tensors, read with `pickletools` (which parses opcodes and runs nothing); [] if unparseable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":  # module and name were pushed as the last two strings
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "an unnamed callable")
            elif op.name in _STRING_OPS:
                strings.append(str(arg))
    except Exception:  # truncated or not a pickle: nothing to report
        return []
    return [name for name in dict.fromkeys(found) if not _TENSOR_PICKLE_GLOBALS.fullmatch(name)]


def _unpickling_refused(path: Path, exc: Exception) -> CheckpointError:
    """The one-line error for a pickle that torch's weights-only loading refuses (or that is not a pickle at all)."""
    text = str(exc)
    found = _REFUSED_GLOBAL.search(text)
    callables = [found[1]] if found else _pickled_callables(path)
    if callables:
        return CheckpointError(f"{path}: refused to load: the file contains code ({', '.join(callables[:3])}) that "
                               f"will not be run, as it could do anything to this machine; {_SAFE_COPY_HINT}")
    if "weights only load failed" in text.lower():
        # e.g. "Unsupported operand 149" for a pickle protocol torch does not read safely, or random bytes
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint: safe loading stopped at "
                               f"{detail[1][:120] if detail else 'unsupported content'!r}; the file is corrupt or "
                               f"in a pickle format torch cannot read safely; download it again or {_SAFE_COPY_HINT}")
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file); "
                           "download it again or check the path")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a pickle read with weights_only=True, as a flat {name: tensor} dict.

    Every tensor is checked to be dense, floating point and finite (`_check_tensors`): the one place where the
    weights of every format enter.
    """
    if path.suffix == ".safetensors":
        _read_header(path)  # corrupt files and non-float dtypes, named, before any tensor is read
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path}: cannot read safetensors weights ({str(exc)[:200]}); the file is corrupt "
                                  "or incomplete, download or export it again") from None
        _check_tensors(state, path)
        return state
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols etc.; the outcome is reported below
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused content; zip errors, truncated files, ...
        if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in str(exc).lower():
            raise _unpickling_refused(path, exc) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                              "download it again or check the path") from None
    state = unwrap_state_dict(obj)
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), optionally under 'model', got "
                              f"{type(obj).__name__}")
    state = dict(state)
    _check_tensors(state, path)
    return state


def expected_shapes(config: ASTConfig) -> dict[str, tuple[int, ...]]:
    """{parameter name: shape} of `AST(config)`, from a model built on the meta device (nothing allocated).

    `config` has passed its bounds, so this takes milliseconds whatever the file claims.
    """
    with torch.device("meta"):
        model = AST(config)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def check_state_fits(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the first missing/unexpected keys or the first wrong shape of `state` (real or meta
    tensors) against `expected` ({name: shape})."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the model: missing {missing[:4]}"
                              f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                              f"{'...' if len(unexpected) > 4 else ''}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key]):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key])}")


def load_state_exact(model: AST, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, raising a CheckpointError that names the first mismatching keys/shapes."""
    check_state_fits({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)
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


def _shape(state: Mapping[str, torch.Tensor], key: str, ndim: int, source: str) -> tuple[int, ...]:
    """The shape of `state[key]`, which must have `ndim` non-empty dimensions (else a CheckpointError)."""
    shape = tuple(state[key].shape)
    if len(shape) != ndim or 0 in shape:
        raise CheckpointError(f"{source}: {key} has shape {shape}, expected {ndim} non-empty dimensions")
    return shape


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
    """An ast-audio folder: every field of config.json is checked, then the weights' header against the config."""
    config_path = folder / NATIVE_CONFIG
    version = meta.get("version")
    if type(version) is not int or version != NATIVE_VERSION:
        raise CheckpointError(f"{config_path}: ast-audio checkpoint version {short_repr(version)} is not supported "
                              f"(this build reads version {NATIVE_VERSION}); upgrade ast-audio")
    missing = [key for key in ("model", "frontend", "labels", "multi_label") if key not in meta]
    if missing:
        raise CheckpointError(f"{config_path}: missing field(s) {missing}; the file was edited or is incomplete")
    section = "model"
    try:
        config = ASTConfig.from_dict(meta[section])
        section = "frontend"
        frontend = FrontendConfig.from_dict(meta[section])
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: invalid {section!r} config ({exc})") from None
    labels, multi_label = meta["labels"], meta["multi_label"]
    names_ok = isinstance(labels, list) and all(isinstance(name, str) for name in labels)
    if not names_ok or len(labels) != config.num_classes:
        found = (f"{len(labels)} names" if names_ok else "a list holding non-strings" if isinstance(labels, list)
                 else f"{type(labels).__name__} {short_repr(labels)}")
        raise CheckpointError(f"{config_path}: labels must be a list of {config.num_classes} strings (one per "
                              f"class), got {found}")
    if not isinstance(multi_label, bool):
        raise CheckpointError(f"{config_path}: multi_label must be true or false, got {type(multi_label).__name__} "
                              f"{short_repr(multi_label)}")
    if (frontend.num_mel_bins, frontend.target_length) != (config.input_fdim, config.input_tdim):
        raise CheckpointError(f"{config_path}: front end ({frontend.target_length} frames x "
                              f"{frontend.num_mel_bins} bins) does not match the model input ({config.input_tdim} x "
                              f"{config.input_fdim}); the file was edited or is corrupt")
    weights = folder / NATIVE_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {NATIVE_WEIGHTS} is missing next to config.json; save the model again")
    return _Loaded("native", config, _read_header(weights), str(folder), frontend, labels, multi_label,
                   read=lambda: _read_tensors(weights))


def _read_reference(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> _Loaded:
    """A reference AST state dict: infer the architecture from the shapes (the file stores no config)."""
    source = str(path)
    _require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight",
                     "mlp_head.1.weight"), source, "the AST checkpoint")
    embed_dim = _shape(state, "cls_token", 3, source)[-1]
    depth = _count_blocks(state, source)
    conv = _shape(state, "patch_embed.proj.weight", 4, source)
    if conv[:2] != (embed_dim, 1):
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {conv}, expected "
                              f"({embed_dim}, 1, fshape, tshape)")
    fshape, tshape = conv[2], conv[3]
    hidden = _shape(state, "blocks.0.mlp.fc1.weight", 2, source)[0]

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
    fstride = check_int("fstride", strides[0], 1, REFERENCE_FDIM)
    tstride = check_int("tstride", strides[1], 1, MAX_FRAMES)
    f_dim = (REFERENCE_FDIM - fshape) // fstride + 1
    num_patches = _shape(state, "pos_embed", 3, source)[1] - 2
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
                           num_classes=_shape(state, "mlp_head.1.weight", 2, source)[0])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the shapes give an impossible config ({exc})") from None
    return _Loaded("reference", config, state, source, default_frontend(config))


def _read_hf(folder: Path, hf_config: dict[str, Any]) -> _Loaded:
    """A transformers AST folder (config.json + weights, optional preprocessor_config.json).

    The config's fields are type- and range-checked under their transformers names, and the weights' shapes (from
    the safetensors header; pytorch_model.bin has to be unpickled for them) against the config, before any model
    is built or any safetensors tensor read.
    """
    source, config_path = str(folder), folder / NATIVE_CONFIG
    get = {**HF_DEFAULTS, **{k: v for k, v in hf_config.items() if v is not None}}
    try:
        ints = {name: check_int(name, get[name], 1, high) for name, high in HF_INT_FIELDS.items()}
        eps = check_float("layer_norm_eps", get["layer_norm_eps"], 0.0, MAX_NORM_EPS, low_open=True)
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    if get["hidden_act"] != "gelu":
        raise CheckpointError(f"{config_path}: hidden_act {short_repr(get['hidden_act'])} is not supported (AST uses "
                              "exact 'gelu')")
    if get["qkv_bias"] is not True:
        raise CheckpointError(f"{config_path}: qkv_bias must be true (AST's qkv projection has a bias), got "
                              f"{short_repr(get['qkv_bias'])}")
    problem_type = hf_config.get("problem_type")
    if problem_type is not None and not isinstance(problem_type, str):
        raise CheckpointError(f"{config_path}: problem_type must be a string or null, got {short_repr(problem_type)}")
    weights = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        sharded = any(folder.glob("*.index.json"))
        raise CheckpointError(f"{source}: no {' or '.join(HF_WEIGHTS)} next to config.json"
                              + ("; sharded checkpoints are not supported, re-save with a larger max_shard_size"
                                 if sharded else "; download the weights too"))
    lazy = weights.suffix == ".safetensors"
    raw = _read_header(weights) if lazy else _read_tensors(weights)  # header: meta tensors, nothing read
    if not is_hf_state_dict(raw):
        raise CheckpointError(f"{weights}: no audio_spectrogram_transformer.* keys; not a transformers AST checkpoint")

    def to_native(raw: StateDict) -> StateDict:
        try:
            return hf_to_native(raw)
        except CheckpointError as exc:
            raise CheckpointError(f"{weights}: {exc}") from None

    state = to_native(raw)
    _require(state, ("mlp_head.1.weight",), source, "the transformers checkpoint (an ASTForAudioClassification)")
    dim, intermediate = ints["hidden_size"], ints["intermediate_size"]
    num_classes = _shape(state, "mlp_head.1.weight", 2, source)[0]
    try:
        config = ASTConfig(model_size=_model_size(dim), embed_dim=dim, depth=ints["num_hidden_layers"],
                           num_heads=ints["num_attention_heads"], mlp_ratio=intermediate / dim,
                           fshape=ints["patch_size"], tshape=ints["patch_size"], fstride=ints["frequency_stride"],
                           tstride=ints["time_stride"], input_fdim=ints["num_mel_bins"], input_tdim=ints["max_length"],
                           num_classes=num_classes, layer_norm_eps=eps, head_norm_eps=eps)  # one eps, as in HF
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: impossible AST config ({exc})") from None
    if int(dim * config.mlp_ratio) != intermediate:
        raise CheckpointError(f"{config_path}: intermediate_size {intermediate} is not expressible as "
                              f"mlp_ratio x hidden_size {dim}")

    labels = None
    id2label = hf_config.get("id2label")
    if id2label is not None:
        if not (isinstance(id2label, dict) and all(isinstance(v, str) for v in id2label.values())):
            raise CheckpointError(f"{config_path}: id2label must be an object of index -> class name strings, got "
                                  f"{short_repr(id2label)}")
        by_index = {int(k): v for k, v in id2label.items() if re.fullmatch(r"\d{1,9}", k)}
        if sorted(by_index) != list(range(num_classes)) or len(by_index) != len(id2label):
            raise CheckpointError(f"{config_path}: id2label must map the indices 0..{num_classes - 1} of the "
                                  f"{num_classes} classifier outputs to names, got {len(id2label)} entries")
        labels = [by_index[i] for i in range(num_classes)]

    frontend = default_frontend(config)
    if (folder / HF_PREPROCESSOR).is_file():
        pre = _read_json(folder / HF_PREPROCESSOR)
        try:
            frontend = frontend.replace(sample_rate=pre.get("sampling_rate", frontend.sample_rate),
                                        mean=pre.get("mean", frontend.mean), std=pre.get("std", frontend.std))
        except ConfigError as exc:
            raise CheckpointError(f"{folder / HF_PREPROCESSOR}: invalid feature extractor settings ({exc})") from None
    multi_label = problem_type != "single_label_classification"
    return _Loaded("hf", config, state, source, frontend, labels, multi_label,
                   read=(lambda: to_native(_read_tensors(weights))) if lazy else None)


def _read_imagenet(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> _Loaded:
    """A timm ViT/DeiT ImageNet state dict, adapted to the config the keywords describe (spec §1.4)."""
    source = str(path)
    _require(state, ("cls_token", "pos_embed", "patch_embed.proj.weight"), source, "the ImageNet checkpoint")
    dim = _shape(state, "patch_embed.proj.weight", 4, source)[0]
    num_prefix = 2 if "dist_token" in state else 1
    side = math.isqrt(max(_shape(state, "pos_embed", 3, source)[1] - num_prefix, 0))
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
    # Names and shapes first, against a meta-device model: a file whose config asks for more than its weights hold
    # is refused here, before its tensors are read or the model is allocated.
    check_state_fits(expected_shapes(config), loaded.state, loaded.source)
    state = loaded.read() if loaded.read is not None else loaded.state
    model = AST(config, frontend=frontend, labels=labels, multi_label=multi_label)
    load_state_exact(model, state, loaded.source)
    if structural:
        model = adapt_model(model, **overrides)
    return model


def load_model(source: str | os.PathLike, *, precision: str = "fp32", device: str | torch.device = "cpu",
               **overrides: Any) -> AST:
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
        precision: "fp32" (default, faithful), "bf16", "int8", "ort-fp32", "ort-int8", or "auto" (the fastest
            measured path for this CPU or GPU; see `ast_audio.precision`). The model records what runs in
            `model.precision` and why in `model.precision_choice`. The ort precisions return an `OnnxModule`.
        device: where the model will run; only decides what "auto" picks (the model is loaded on the CPU).

    Raises:
        CheckpointError: missing, unreadable or unrecognised source, or weights that do not fit.
        ConfigError: overrides that cannot be applied (e.g. another patch kernel or width).
    """
    from ..model.precision import apply_precision, choose_precision

    choice = choose_precision(precision, device=device)  # fail before reading a large file
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
    return apply_precision(_build(loaded, overrides).eval(), choice)
