"""Weight averaging (the paper's "WA", spec §3.1): the equal-weight mean of every tensor of several checkpoints.

Only checkpoints of the same model can be averaged: the same architecture (every config field but the size name),
front end (floats such as the normalisation statistics to a relative 1e-6), labels, and tensor names and shapes.
Anything else raises CheckpointError saying which checkpoint differs and in which fields.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


# Floats of two configs (normalisation mean/std, frame lengths, mlp_ratio, LayerNorm eps) are the same when they agree
# to this relative tolerance: two runs of one model store statistics that differ in the 13th digit (computed on other
# threads or machines), while a float32 input cannot tell apart values closer than ~6e-8 relative.
FLOAT_RTOL = 1e-6
# ASTConfig fields that name rather than define an architecture (the width, heads and depth are fields of their own).
NAME_FIELDS = ("model_size",)


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats compared to `FLOAT_RTOL`."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=FLOAT_RTOL)
    return a == b


def _field_differences(reference: Mapping[str, Any], other: Mapping[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """"field: A vs B" for each field of two config dicts that differs (floats to `FLOAT_RTOL`)."""
    return [f"{k}: {reference.get(k)!r} vs {other.get(k)!r}" for k in dict.fromkeys([*reference, *other])
            if k not in skip and not _same(reference.get(k), other.get(k))]


def _name_at(names: Sequence[str], i: int) -> str:
    return repr(names[i]) if i < len(names) else "none"


def model_differences(reference: AST, other: AST) -> str | None:
    """How `other` differs from `reference` in what averaging needs equal, or None: the architecture (every
    ASTConfig field but the size name), the front end (its statistics to `FLOAT_RTOL`), the labels and the score
    rule."""
    parts = {"architecture": _field_differences(reference.config.to_dict(), other.config.to_dict(), NAME_FIELDS),
             "front end": _field_differences(reference.frontend.to_dict(), other.frontend.to_dict())}
    for part, diffs in parts.items():
        if diffs:
            more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            return f"{part} ({', '.join(diffs[:3])}{more})"
    if reference.labels != other.labels:
        ours, theirs = list(reference.labels), list(other.labels)
        first = next(i for i in range(max(len(ours), len(theirs))) if ours[i:i + 1] != theirs[i:i + 1])
        return f"labels (class {first}: {_name_at(ours, first)} vs {_name_at(theirs, first)})"
    if reference.multi_label != other.multi_label:
        return f"multi_label ({reference.multi_label} vs {other.multi_label})"
    return None


def average_models(models: Sequence[AST], names: Sequence[str] | None = None) -> AST:
    """A new AST whose weights are the mean of `models`' weights; refuses models of different architectures, front
    ends, labels or score rules (`model_differences`). The result takes the first model's config and front end."""
    if not models:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    names = list(names) if names is not None else [f"checkpoint {i + 1}" for i in range(len(models))]
    for name, model in zip(names[1:], models[1:], strict=True):
        diff = model_differences(models[0], model)
        if diff is not None:
            raise CheckpointError(f"{name}: its {diff} differs from {names[0]}; only checkpoints of the same "
                                  "model (same architecture, front end and labels) can be averaged")
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
