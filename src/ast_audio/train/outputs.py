"""What a training run writes besides checkpoints: metrics.csv (one row per epoch), JSON results, TensorBoard
events and the one-line progress of each epoch."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text
from .recipes import TrainConfig

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "valid_loss", "mAP", "mAUC", "d_prime", "acc", "cum_mAP", "seconds",
                  "skipped")


def metrics_csv(rows: Sequence[dict[str, Any]]) -> str:
    """metrics.csv: a header of `METRIC_COLUMNS` (then a recipe's own columns, e.g. the sed recipe's psds1), then
    one row per epoch (floats to 6 significant digits)."""
    buffer = io.StringIO()
    extra = [k for k in (rows[0] if rows else {}) if k not in METRIC_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=[*METRIC_COLUMNS, *extra], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON (non-finite numbers as null), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


def tensorboard_writer(out: Path, config: TrainConfig, main: bool):
    if not (main and config.tensorboard):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def format_row(row: dict[str, Any], config: TrainConfig) -> str:
    main = config.main_metric
    return (f"epoch {row['epoch']}: lr {row['lr']:.3g}, train loss {row['train_loss']:.4f}, valid loss "
            f"{row['valid_loss']:.4f}, {main} {row[main]:.4f}, mAUC {row['mAUC']:.4f}, cum_mAP {row['cum_mAP']:.4f}, "
            f"{row['seconds']:.1f} s" + (f", {row['skipped']} clips skipped" if row["skipped"] else ""))


def write_epoch_outputs(out: Path, rows: list[dict[str, Any]], writer, row: dict[str, Any]) -> None:
    atomic_write_text(out / "metrics.csv", metrics_csv(rows))
    if writer is not None:
        for key in METRIC_COLUMNS[1:]:
            value = row[key]
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        writer.flush()
