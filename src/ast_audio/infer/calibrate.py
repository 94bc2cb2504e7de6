"""Per-class thresholds from a labelled set: choose them (F1-optimal or a target precision), read and write them.

`calibration_table` sweeps every distinct score of a class as a threshold for the rule score >= threshold;
`score_clips` gives the clip scores of a labelled set (clip score = max over windows, as `Tagger.tag` aggregates).
`calibrate_events` chooses per-class thresholds for event-based F1 on strongly labelled recordings (a DCASE truth
table). `ast-audio calibrate` writes the CSV that `events --thresholds`, `tag --thresholds` and `serve --thresholds`
read.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import AstAudioError, ConfigError
from ..utils import atomic_write_text
from .events import Energy, EventConfig, detect_events
from .stream import Timeline
from .tagger import Tagger
from .windowing import Windowing, resolve, tag_windowing


def read_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """Read a thresholds CSV with at least the columns label,threshold (as `write_thresholds` / calibrate write)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "label" not in fields or "threshold" not in fields:
                raise ConfigError(f"{path}: thresholds CSV needs the columns label,threshold (as written by "
                                  f"`ast-audio calibrate`), found {','.join(fields) or 'no header'}")
            out: dict[str, float] = {}
            for line_no, row in enumerate(reader, start=2):
                label, text = (row.get("label") or "").strip(), (row.get("threshold") or "").strip()
                try:
                    value = float(text)
                except ValueError:
                    raise ConfigError(f"{path}:{line_no}: threshold {text!r} is not a number") from None
                if not label or not 0.0 <= value <= 1.0:
                    raise ConfigError(f"{path}:{line_no}: expected a label and a threshold in [0, 1], got "
                                      f"{label!r}, {text!r}")
                out[label] = value
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read thresholds CSV ({exc}); expected columns label,threshold") from None
    if not out:
        raise ConfigError(f"{path}: thresholds CSV has no rows; run `ast-audio calibrate` to make one")
    return out


def write_thresholds(thresholds: Mapping[str, float], path: str | os.PathLike,
                     stats: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Write label,threshold[,f1,precision,recall] atomically; `stats` maps a label to its f1/precision/recall."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["f1", "precision", "recall"] if stats else []
    writer.writerow(["label", "threshold", *extra])
    for label, value in thresholds.items():
        row = [label, f"{value:.6g}"]
        if stats:
            s = stats.get(label, {})
            row += [f"{s.get(k, float('nan')):.6g}" for k in extra]
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _sweep(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score t (descending): (t, true positives, predicted positives) of the rule score >= t."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], targets[order]
    tp = np.cumsum(y)
    pp = np.arange(1, s.shape[0] + 1)
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each group of tied scores
    return s[last], tp[last], pp[last]


def calibration_table(scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                      labels: Sequence[str], *, mode: Literal["f1", "precision"] = "f1",
                      target_precision: float = 0.9) -> dict[str, dict[str, float]]:
    """Per-class threshold with its precision, recall and F1 on (scores, targets) for the rule score >= threshold.

    mode "f1": the threshold (one of the scores) with the highest F1 (ties: the highest threshold).
    mode "precision": the lowest threshold whose precision reaches `target_precision`.
    A class with no positives, or that never reaches the target precision, gets threshold 1.0 and NaN stats
    (it is effectively switched off; `events` then reports it only at a score of exactly 1).
    """
    if mode not in ("f1", "precision"):
        raise ConfigError(f"mode must be 'f1' or 'precision', got {mode!r}")
    if not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"target_precision must be in (0, 1], got {target_precision}")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64) >= 0.5
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(labels):
        raise ConfigError(f"scores {s.shape} and targets {y.shape} must both be (N, C) with C = {len(labels)} labels")
    table: dict[str, dict[str, float]] = {}
    nan = float("nan")
    for c, label in enumerate(labels):
        positives = int(y[:, c].sum())
        row = {"threshold": 1.0, "f1": nan, "precision": nan, "recall": nan}
        if positives and s.shape[0]:
            t, tp, pp = _sweep(s[:, c], y[:, c])
            precision, recall = tp / pp, tp / positives
            f1 = 2 * tp / (pp + positives)
            if mode == "f1":
                k = int(np.flatnonzero(f1 == f1.max())[0])  # highest threshold among the best F1
            else:
                ok = np.flatnonzero(precision >= target_precision)
                k = int(ok[-1]) if ok.size else -1  # thresholds descend: the last one is the lowest
            if k >= 0:
                row = {"threshold": float(t[k]), "f1": float(f1[k]), "precision": float(precision[k]),
                       "recall": float(recall[k])}
        table[label] = row
    return table


def calibrate(scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, labels: Sequence[str], *,
              mode: Literal["f1", "precision"] = "f1", target_precision: float = 0.9) -> dict[str, float]:
    """Per-class thresholds (label -> threshold) from scores (N, C) and 0/1 targets (N, C); see calibration_table."""
    table = calibration_table(scores, targets, labels, mode=mode, target_precision=target_precision)
    return {label: row["threshold"] for label, row in table.items()}


def score_clips(tagger: Tagger, clips: Sequence[tuple[str, Sequence[str]]], *, window_s: float | None = None,
                hop_s: float | None = None, batch_size: int = 8,
                on_error: Callable[[str, AstAudioError], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                windowing: Windowing | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip scores and 0/1 targets of a labelled set, both (N, C) over the model's classes.

    Args:
        clips: (audio path, the clip's class names) pairs; every name must be one of the model's classes.
        window_s, hop_s, windowing, batch_size: as in `Tagger.tag`; a clip's score is the max over its windows.
        on_error: called as on_error(path, error) for a clip that cannot be scored, which is then left out
            (default: raise).
        progress: called as progress(clips_done, clips) before each clip and at the end (e.g.
            `ast_audio.utils.Progress`).

    Raises:
        ConfigError: a class name that is not one of the model's (calibrate a model trained on this label set), or
            no clip could be scored.
    """
    index = {label: i for i, label in enumerate(tagger.labels)}
    unknown = list(dict.fromkeys(name for _, names in clips for name in names if name not in index))
    if unknown:
        raise ConfigError(f"data set classes {', '.join(repr(u) for u in unknown[:5])} are not classes of the model "
                          f"(which has e.g. {', '.join(repr(n) for n in tagger.labels[:5])}); calibrate a model "
                          "trained on this label set")
    windowing = resolve(tag_windowing, tagger.model, windowing, window_s, hop_s)  # checked before any decoding
    scores, targets = [], []
    for done, (path, names) in enumerate(clips):
        if progress is not None:
            progress(done, len(clips))
        try:
            result = tagger.tag(path, top_k=1, windowing=windowing, batch_size=batch_size)[0]
        except AstAudioError as exc:
            if on_error is None:
                raise
            on_error(path, exc)
            continue
        row = torch.zeros(len(tagger.labels))
        row[[index[name] for name in names]] = 1.0
        scores.append(result.scores)
        targets.append(row)
    if progress is not None:
        progress(len(clips), len(clips))
    if not scores:
        raise ConfigError("no clip of the data set could be scored; nothing to calibrate")
    return torch.stack(scores), torch.stack(targets)  # (N, C) each


# Thresholds tried by `calibrate_events` (event-based F1 is not monotone in the threshold, so a grid, not a sweep).
EVENT_CANDIDATES = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95


def calibrate_events(timelines: Mapping[str, Timeline], truth: Mapping[str, Sequence[tuple[float, float, str]]],
                     config: EventConfig | None = None, candidates: Sequence[float] = EVENT_CANDIDATES, *,
                     energies: Mapping[str, Energy] | None = None) -> dict[str, dict[str, float]]:
    """Per-class thresholds with the best collar-based (event) F1 on strongly labelled recordings.

    timelines: {audio id: window scores} of the recordings; truth: {audio id: [(onset, offset, label)]} (the DCASE
    table `evaluate_events.read_truth` reads). For every candidate threshold t, `detect_events` runs with `config`
    and threshold t for every class, and sed_eval scores each class's events (onset collar 0.2 s, offset collar
    max(0.2 s, 20 %)); a class keeps the t with its highest F1 (ties: the higher t). Classes are independent in
    detection (and in this F1), so one pass over the candidates serves all of them. Classes without true events
    are left out. `energies` ({audio id: Energy}) is needed when `config.refine` is "energy". Returns
    {label: {"threshold", "f1", "precision", "recall"}}.
    """
    from .evaluate_events import sed_eval_f1

    config = config if config is not None else EventConfig()
    ids = sorted(timelines)
    truth_ids = {audio_id: [tuple(e) for e in truth.get(audio_id, [])] for audio_id in ids}
    present = sorted({e[2] for events in truth_ids.values() for e in events})
    if not present:
        raise ConfigError("the truth has no events in the scored recordings; nothing to calibrate")
    best: dict[str, dict[str, float]] = {}
    for t in sorted(candidates):
        step = replace(config, threshold=float(t), thresholds=None)
        pred = {audio_id: [(e.onset_s, e.offset_s, e.label)
                           for e in detect_events(timelines[audio_id], step, (energies or {}).get(audio_id))]
                for audio_id in ids}
        per_class = sed_eval_f1(truth_ids, pred, {k: timelines[k].duration_s for k in ids})["per_class"]
        for label in present:
            row = per_class.get(label, {})
            f1 = row.get("event_f1", 0.0)
            f1 = 0.0 if f1 != f1 else f1  # NaN (no output events and no true ones) counts as 0
            if label not in best or f1 >= best[label]["f1"]:
                best[label] = {"threshold": float(t), "f1": f1, "precision": row.get("event_precision", 0.0),
                               "recall": row.get("event_recall", 0.0)}
    return best
