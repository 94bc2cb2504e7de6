"""One entry point for every checkpoint format: `load_model(source, **overrides)`, plus `save_model`.

Formats recognised (see the issue and spec §4.3, §11):
1. native: a folder with `model.safetensors` and `config.json` {"format": "ast-audio", ...};
2. reference AST `.pth` (`module.v.*` / `module.mlp_head.*`);
3. transformers AST folder or hub id (config.json with `model_type` "audio-spectrogram-transformer");
4. timm / DeiT / ViT ImageNet checkpoints, adapted to the requested AST config (spec §1.4);
5. an AudioSet AST adapted to another length, stride or class count (spec §1.5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import ASTConfig, FrontendConfig
from ..errors import CheckpointError
from ..model import AST
from ..utils import atomic_path

NATIVE_FORMAT = "ast-audio"
NATIVE_VERSION = 1
NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"


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
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / NATIVE_WEIGHTS), metadata={"format": NATIVE_FORMAT})
        (tmp / NATIVE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({exc})") from None


def _load_native(folder: Path, overrides: dict[str, Any]) -> AST:
    meta = _read_json(folder / NATIVE_CONFIG)
    if meta.get("version") != NATIVE_VERSION:
        raise CheckpointError(f"{folder}: ast-audio checkpoint version {meta.get('version')!r} is not supported "
                              f"(this build reads version {NATIVE_VERSION}); upgrade ast-audio")
    try:
        config = ASTConfig.from_dict(meta["model"])
        frontend = FrontendConfig.from_dict(meta["frontend"])
        labels, multi_label = meta["labels"], meta["multi_label"]
    except KeyError as exc:
        raise CheckpointError(f"{folder / NATIVE_CONFIG}: missing field {exc}") from None
    try:
        state = load_file(str(folder / NATIVE_WEIGHTS))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{folder / NATIVE_WEIGHTS}: cannot read safetensors weights ({exc})") from None
    model = AST(config, frontend=frontend, labels=labels, multi_label=multi_label)
    load_state_exact(model, state, str(folder))
    if overrides:
        from .adapt import adapt_model

        model = adapt_model(model, **overrides)
    return model


def load_state_exact(model: AST, state: dict[str, torch.Tensor], source: str) -> None:
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


def load_model(source: str | Path, **overrides: Any) -> AST:
    """Load any supported checkpoint as an `AST` in eval mode.

    `overrides` take ASTConfig field names (input_tdim, input_fdim, fstride, tstride, num_classes, model_size,
    pooling, ...) and the weights are adapted to them. Extra keywords: `labels` (CSV path or list of names),
    `multi_label`, `frontend` (FrontendConfig or dict of its fields).
    """
    path = Path(source)
    if path.is_dir() and (path / NATIVE_CONFIG).is_file():
        meta = _read_json(path / NATIVE_CONFIG)
        if meta.get("format") == NATIVE_FORMAT:
            return _load_native(path, overrides).eval()
    raise CheckpointError(f"{source}: not a recognised checkpoint; expected an ast-audio folder "
                          "(model.safetensors + config.json), a reference AST .pth, a transformers AST folder or "
                          "hub id, or a timm/DeiT ImageNet checkpoint")
