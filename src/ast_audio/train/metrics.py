"""Evaluation metrics of the reference (spec §3.4): mAP, mean ROC AUC, d-prime and top-1 accuracy.

Pure numpy functions, no scikit-learn at run time; tests/test_metrics.py checks them against scikit-learn's
`average_precision_score` and `roc_auc_score` per class.

Classes without both a positive and a negative example, as scikit-learn 1.9 handles them:
- AP of a class with no positive is 0.0 (scikit-learn warns "No positive class found" and returns 0.0); such classes
  stay in the mAP mean, exactly as `average_precision_score(..., average="macro")` would count them;
- AUC of a class with only one label value is undefined (scikit-learn returns NaN with a warning); such classes are
  left out of the mAUC mean (scikit-learn's macro average would be NaN). `Metrics.auc_defined` says how many counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


def _binary_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive counts at every distinct score threshold, highest threshold first.

    Tied scores form one threshold (as scikit-learn's `_binary_clf_curve`), so AP and AUC do not depend on the
    order of tied examples.
    """
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # index of the last example of each score value
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64)


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the precision-recall step curve: sum over thresholds of (R_n - R_{n-1}) * P_n.

    Args:
        y: (N,) binary targets (values > 0.5 count as positive).
        s: (N,) scores, higher = more likely positive.
    """
    y = (np.asarray(y) > 0.5).astype(np.float64)
    s = np.asarray(s, dtype=np.float64)
    positives = y.sum()
    if positives == 0:
        return 0.0  # scikit-learn: recall is 1 everywhere, so every recall step is 0
    tps, fps = _binary_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / positives
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule over distinct thresholds; NaN if only one class is present."""
    y = (np.asarray(y) > 0.5).astype(np.float64)
    s = np.asarray(s, dtype=np.float64)
    positives, negatives = y.sum(), y.size - y.sum()
    if positives == 0 or negatives == 0:
        return math.nan
    tps, fps = _binary_curve(y, s)
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the reference's conversion of the *mean* AUC (spec §3.4).

    Phi^-1 is `torch.special.ndtri` in float64 (the reference uses scipy.stats.norm.ppf; tests compare the two).
    """
    if math.isnan(auc):
        return math.nan
    return math.sqrt(2.0) * float(torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)))


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy over the clips that have a class: argmax(scores) == argmax(targets) (not class-averaged).

    Clips without any positive (background clips of a multi-label set) have no top class to hit and are left out.
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    labelled = targets.max(axis=1) > 0 if targets.ndim == 2 and targets.shape[1] else np.zeros(0, dtype=bool)
    scores, targets = scores[labelled], targets[labelled]
    if scores.shape[0] == 0:
        return math.nan
    return float(np.mean(scores.argmax(axis=1) == targets.argmax(axis=1)))


@dataclass(frozen=True)
class Metrics:
    """Summary of one evaluation: mAP, mAUC and d' over classes, top-1 accuracy over clips."""

    mAP: float
    mAUC: float
    d_prime: float
    acc: float
    clips: int
    classes: int
    auc_defined: int  # classes with both positives and negatives (those averaged into mAUC)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def per_class(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) scores and binary targets -> per-class AP (C,) and AUC (C,) (NaN where undefined)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (clips, classes)")
    ap = np.array([average_precision(targets[:, c], scores[:, c]) for c in range(scores.shape[1])])
    auc = np.array([roc_auc(targets[:, c], scores[:, c]) for c in range(scores.shape[1])])
    return ap, auc


def evaluate(scores: np.ndarray, targets: np.ndarray) -> Metrics:
    """All reference metrics of (N, C) probabilities against (N, C) targets (hard 0/1; soft ones are cut at 0.5)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if scores.shape[0] == 0:
        return Metrics(math.nan, math.nan, math.nan, math.nan, 0, scores.shape[-1] if scores.ndim == 2 else 0, 0)
    ap, auc = per_class(scores, targets)
    defined = ~np.isnan(auc)
    mauc = float(auc[defined].mean()) if defined.any() else math.nan
    return Metrics(mAP=float(ap.mean()), mAUC=mauc, d_prime=d_prime(mauc) if defined.any() else math.nan,
                   acc=accuracy(scores, targets), clips=int(scores.shape[0]), classes=int(scores.shape[1]),
                   auc_defined=int(defined.sum()))


def esc50_summary(fold_rows: dict[int, list[dict[str, Any]]], metric: str = "acc") -> dict[str, Any]:
    """The reference's `get_esc_result.py` (spec §3.3): average the folds' per-epoch results elementwise, pick the
    single epoch with the best fold-averaged metric, report every fold's value at that epoch and their mean."""
    folds = sorted(fold_rows)
    epochs = min(len(fold_rows[k]) for k in folds)
    mean_by_epoch = [float(np.mean([fold_rows[k][e][metric] for k in folds])) for e in range(epochs)]
    best = int(np.argmax(mean_by_epoch))
    return {"metric": metric, "folds": folds, "best_epoch": best + 1,
            "fold_values": [fold_rows[k][best][metric] for k in folds], "mean": mean_by_epoch[best],
            "mean_by_epoch": mean_by_epoch}
