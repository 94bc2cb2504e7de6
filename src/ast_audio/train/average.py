"""Weight averaging (the paper's "WA", spec §3.1): the equal-weight mean of every tensor of several checkpoints.

Only checkpoints of the same model can be averaged: identical architecture, front end, labels and tensor names and
shapes. Anything else raises CheckpointError saying which checkpoint differs and how.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..model import AST


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """Element-wise mean of every tensor over `states`, accumulated in float64 and cast back to each dtype.

    The reference sums float32 tensors and divides; float64 accumulation changes the result only in the last bit
    and makes it independent of the order of the checkpoints.
    """
    if not states:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    names = list(names) if names is not None else [f"checkpoint {i + 1}" for i in range(len(states))]
    first = states[0]
    for name, state in zip(names[1:], states[1:], strict=True):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            raise CheckpointError(f"{name}: tensor names differ from {names[0]} (missing {missing[:3]}, extra "
                                  f"{extra[:3]}); only checkpoints of the same model can be averaged")
        for key, value in first.items():
            if state[key].shape != value.shape:
                raise CheckpointError(f"{name}: {key} has shape {tuple(state[key].shape)} but {names[0]} has "
                                      f"{tuple(value.shape)}; only checkpoints of the same model can be averaged")
    out = {}
    for key, value in first.items():
        total = torch.zeros(value.shape, dtype=torch.float64)
        for state in states:
            total += state[key].detach().to("cpu", torch.float64)
        out[key] = (total / len(states)).to(value.dtype)
    return out


def _describe(model: AST) -> dict:
    return {"model": model.config.to_dict(), "frontend": model.frontend.to_dict(), "labels": list(model.labels),
            "multi_label": model.multi_label}


def average_models(models: Sequence[AST], names: Sequence[str] | None = None) -> AST:
    """A new AST whose weights are the mean of `models`' weights; refuses models with different configs."""
    if not models:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    names = list(names) if names is not None else [f"checkpoint {i + 1}" for i in range(len(models))]
    reference = _describe(models[0])
    for name, model in zip(names[1:], models[1:], strict=True):
        other = _describe(model)
        for part in ("model", "frontend", "labels", "multi_label"):
            if other[part] != reference[part]:
                diff = part
                if isinstance(reference[part], dict):
                    keys = [k for k in reference[part] if reference[part][k] != other[part].get(k)]
                    pairs = ", ".join(f"{k}: {reference[part][k]!r} vs {other[part].get(k)!r}" for k in keys[:3])
                    diff = f"{part} ({pairs})"
                raise CheckpointError(f"{name}: its {diff} differs from {names[0]}; only checkpoints of the same "
                                      "model (same config, front end and labels) can be averaged")
    state = average_state_dicts([m.state_dict() for m in models], names)
    first = models[0]
    averaged = AST(first.config, frontend=first.frontend, labels=first.labels, multi_label=first.multi_label)
    averaged.load_state_dict(state, strict=True)
    return averaged.eval()


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> AST:
    """Load every checkpoint (any format `load_model` reads) and average them."""
    from ..weights.checkpoint import load_model

    models = [load_model(p) for p in paths]
    return average_models(models, [str(Path(p)) for p in paths])
