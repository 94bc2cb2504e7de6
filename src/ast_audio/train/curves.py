"""A PNG of the training curves (losses, main metrics, learning rate per epoch); matplotlib is imported lazily."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..utils import atomic_path


def plot_curves(rows: Sequence[Mapping[str, float]], path: str | os.PathLike, title: str = "") -> Path:
    """Write curves of `rows` (metrics.csv rows: epoch, lr, train_loss, valid_loss, mAP, acc, ...) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]

    def column(name: str) -> list[float]:
        return [float(r.get(name, math.nan)) for r in rows]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, column("train_loss"), marker="o", label="train")
    axes[0].plot(epochs, column("valid_loss"), marker="o", label="valid")
    axes[0].set_title("loss")
    for name in ("mAP", "mAUC", "acc", "cum_mAP"):
        values = column(name)
        if any(not math.isnan(v) for v in values):
            axes[1].plot(epochs, values, marker="o", label=name)
    axes[1].set_title("validation")
    lrs = column("lr")
    axes[2].plot(epochs, lrs, marker="o")
    if all(v > 0 for v in lrs):  # warm-up can leave an epoch at lr 0, which a log axis cannot show
        axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
