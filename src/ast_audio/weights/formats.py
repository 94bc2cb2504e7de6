"""Format readers: each turns one checkpoint format into a config plus native weights that fit it exactly.

- native: a folder with `model.safetensors` and `config.json` {"format": "ast-audio", ...};
- reference AST `.pth` (`module.v.*` / `module.mlp_head.*`): the config is inferred from the tensor shapes and
  the stride from the file name (`audioset_12_12_0.4467.pth`) or the `fstride`/`tstride` keywords (default 10);
  a bare native state dict (`torch.save(model.state_dict())`) is read the same way;
- transformers AST: a folder with config.json (`model_type` "audio-spectrogram-transformer") and
  model.safetensors or pytorch_model.bin (v4 or v5 key spelling);
- timm / DeiT / ViT ImageNet checkpoints (.pth/.pt/.bin, optionally `{"model": ...}`, or .safetensors), adapted to
  the AST config given by the keywords.

Every field of a stored config is type- and range-checked, and the weights' shapes (from the safetensors header when
there is one) against the config, before a model is built. `ast_audio.weights.checkpoint.load_model` is the entry
point.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import (
    DATASET_FRAMES,
    MAX_DEPTH,
    MAX_EMBED_DIM,
    MAX_FRAMES,
    MAX_MEL_BINS,
    MAX_MLP_RATIO,
    MAX_NORM_EPS,
    MODEL_SIZES,
    ASTConfig,
    FrontendConfig,
    check_float,
    check_input_sizes,
    check_int,
    default_frontend,
    grid_size,
    short_repr,
)
from ..errors import CheckpointError, ConfigError
from .adapt import from_imagenet
from .convert import StateDict, hf_to_native, is_hf_state_dict, is_native_key, reference_to_native
from .tensors import read_header, read_tensors

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
# `audioset_12_12_0.4467.pth`, `speechcommands_10_10_0.9812.pth`: <name>_<fstride>_<tstride>_<score>.
_STRIDE_IN_NAME = re.compile(r"_(\d{1,4})_(\d{1,4})_\d+(?:\.\d+)?")

FORMATS_HELP = ("expected an ast-audio folder (config.json + model.safetensors), a reference AST .pth, a "
                 "transformers AST folder or hub id, or a timm/DeiT ImageNet checkpoint")


@dataclass
class Loaded:
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


def _read_native(folder: Path, meta: dict[str, Any]) -> Loaded:
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
    try:
        check_input_sizes(config, frontend)
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: the front end does not match the model input ({exc}); the file was "
                              "edited or is corrupt") from None
    weights = folder / NATIVE_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {NATIVE_WEIGHTS} is missing next to config.json; save the model again")
    return Loaded("native", config, read_header(weights), str(folder), frontend, labels, multi_label,
                   read=lambda: read_tensors(weights))


def _read_reference(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> Loaded:
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
    try:
        f_dim = grid_size(REFERENCE_FDIM, tshape, fshape, tshape, fstride, tstride)[0]
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    num_patches = _shape(state, "pos_embed", 3, source)[1] - 2
    if num_patches <= 0 or num_patches % f_dim:
        raise CheckpointError(f"{source}: pos_embed holds {num_patches} patches, not a multiple of the {f_dim} "
                              f"frequency rows of {REFERENCE_FDIM} mel bins at fstride {fstride}; pass the "
                              "fstride=/tstride= the checkpoint was trained with")
    t_dim = num_patches // f_dim

    def t_dim_of(tdim: int) -> int:
        return grid_size(REFERENCE_FDIM, tdim, fshape, tshape, fstride, tstride)[1]

    # Any length in a range of tstride frames gives this grid: prefer the caller's, then the recipes' lengths.
    candidates = [overrides.get("input_tdim"), *DATASET_FRAMES.values()]  # the recipes' lengths (config.py)
    input_tdim = next((n for n in candidates if isinstance(n, int) and n >= tshape and t_dim_of(n) == t_dim),
                      (t_dim - 1) * tstride + tshape)
    try:
        config = ASTConfig(model_size=_model_size(embed_dim), embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           mlp_ratio=hidden / embed_dim, fshape=fshape, tshape=tshape, fstride=fstride,
                           tstride=tstride, input_fdim=REFERENCE_FDIM, input_tdim=input_tdim,
                           num_classes=_shape(state, "mlp_head.1.weight", 2, source)[0])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the shapes give an impossible config ({exc})") from None
    return Loaded("reference", config, state, source, default_frontend(config))


def _read_hf(folder: Path, hf_config: dict[str, Any]) -> Loaded:
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
    raw = read_header(weights) if lazy else read_tensors(weights)  # header: meta tensors, nothing read
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
    return Loaded("hf", config, state, source, frontend, labels, multi_label,
                   read=(lambda: to_native(read_tensors(weights))) if lazy else None)


def _read_imagenet(state: StateDict, path: Path, overrides: Mapping[str, Any]) -> Loaded:
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
    return Loaded("imagenet", config, native, source, default_frontend(config))


def read_file(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    if path.suffix not in (*PICKLE_SUFFIXES, ".safetensors"):
        raise CheckpointError(f"{path}: unknown file type {path.suffix!r}; {FORMATS_HELP} "
                              f"(files: {', '.join(PICKLE_SUFFIXES)}, .safetensors)")
    state = read_tensors(path)
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
    raise CheckpointError(f"{path}: unrecognised keys {sorted(state)[:4]}...; {FORMATS_HELP}")


def read_folder(folder: Path) -> Loaded:
    config_path = folder / NATIVE_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: folder has no config.json; {FORMATS_HELP}")
    meta = _read_json(config_path)
    if meta.get("format") == NATIVE_FORMAT:
        return _read_native(folder, meta)
    if meta.get("model_type") == HF_MODEL_TYPE:
        return _read_hf(folder, meta)
    found = meta.get("model_type") or meta.get("format")
    raise CheckpointError(f"{config_path}: neither an ast-audio config (format 'ast-audio') nor a transformers AST "
                          f"config (model_type '{HF_MODEL_TYPE}'), found {found!r}")
