"""Training checkpoints: everything `--resume` needs to continue a killed run to the same weights.

`checkpoint/` in a run folder holds the model (native format) and `train_state.pt` (epoch, step, optimizer,
scheduler, scaler, sampler, RNG states, the per-epoch metrics and the running-mean predictions), replaced atomically
after each epoch. `load_training_state` reads it back with `torch.load(weights_only=True)` (no code is unpickled);
`find_checkpoint` also recovers the previous checkpoint a kill between the two renames of a folder swap leaves.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..model import AST
from ..utils import atomic_path, backup_path, state_nbytes, temp_paths
from ..weights.checkpoint import load_model, save_model
from .recipes import TrainConfig

STATE_FILE = "train_state.pt"
STATE_FORMAT = "ast-audio-train"
STATE_VERSION = 1
# Fields that may change when a run is resumed (where and how it runs, not what it computes).
RUNTIME_FIELDS = frozenset({"device", "num_workers", "progress", "tensorboard", "data", "eval_data", "label_csv",
                            "max_bad_batches"})
# And how long it runs: `--resume --epochs N` extends a run (the learning-rate milestones do not depend on it).
RESUMABLE_FIELDS = RUNTIME_FIELDS | {"epochs"}


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and lists only, so `torch.load(weights_only=True)` reads them back."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the Python, numpy and torch generators from `rng_state()`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def training_state(config: TrainConfig, epoch: int, global_step: int, parts: dict[str, Any],
                   rows: list[dict[str, Any]], cum_sum: torch.Tensor, cum_count: torch.Tensor) -> dict[str, Any]:
    """The `train_state.pt` content after `epoch`: `parts` maps optimizer/scheduler/scaler/sampler to their objects
    (None where the run has none)."""
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch, "global_step": global_step,
            "config": json.dumps(config.to_dict()),
            **{name: part.state_dict() if part is not None else {} for name, part in parts.items()},
            "rng": rng_state(), "metrics": rows, "cum_sum": cum_sum, "cum_count": cum_count}


def save_checkpoint(folder: Path, model: AST, state: dict[str, Any]) -> None:
    """Atomically write folder/{model.safetensors, config.json, train_state.pt}: a reader (or `--resume` after a
    kill, see `find_checkpoint`) sees either the previous epoch's complete checkpoint or this one. A full disk
    raises a one-line OutputError naming the folder and the space needed; the previous checkpoint stays."""
    with atomic_path(folder, size_hint=state_nbytes(model.state_dict()) + state_nbytes(state)) as tmp:
        save_model(model, tmp)
        torch.save(state, tmp / STATE_FILE)


def find_checkpoint(folder: Path, say: Callable[[str], None] = lambda _msg: None) -> Path | None:
    """The checkpoint `--resume` continues from: `folder` if it holds a training state, else the previous checkpoint
    that a kill between `atomic_path`'s two renames leaves at `backup_path(folder)` (with nothing at `folder`), which
    is moved back to `folder` (saying so in one line). Unfinished temporary checkpoints of killed writes are deleted
    (each is as large as a checkpoint). None if there is neither."""
    for stale in temp_paths(folder):
        shutil.rmtree(stale, ignore_errors=True)
    if (folder / STATE_FILE).is_file():
        return folder
    backup = backup_path(folder)
    if (backup / STATE_FILE).is_file() and not folder.exists():
        os.replace(backup, folder)
        say(f"{folder} was missing (the run was killed while replacing it); restored the previous checkpoint from "
            f"{backup}")
        return folder
    return None


def load_training_state(folder: Path) -> tuple[AST, dict[str, Any]]:
    """The model and training state of the checkpoint `folder` (read with weights_only=True: no code is unpickled).
    Not to be confused with `ast_audio.weights.checkpoint.load_model`, which reads model weights only."""
    path = folder / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: cannot read the training state ({exc}); delete {folder} to start "
                              "over") from None
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not an ast-audio training state of version {STATE_VERSION}")
    return load_model(folder), state


def check_resume_config(saved: TrainConfig, given: TrainConfig, folder: Path) -> TrainConfig:
    """The saved run's config with the given `RESUMABLE_FIELDS`; ConfigError if anything else differs."""
    a, b = saved.to_dict(), given.to_dict()
    differ = [k for k in a if k not in RESUMABLE_FIELDS and a[k] != b.get(k)]
    if differ:
        details = ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in differ[:4])
        raise ConfigError(f"{folder}: --resume with different settings ({details}); resume with the options of the "
                          "original run, or train into a new -o/--output")
    return saved.replace(**{k: getattr(given, k) for k in RESUMABLE_FIELDS})
