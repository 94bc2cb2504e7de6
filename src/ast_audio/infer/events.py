"""Sound events on audio of any length: streamed window scores -> per-class events with onset and offset.

Pipeline: `score_stream` scores the windows of a file with `Tagger.stream_scores` (the Tagger's own streamed scoring:
block-by-block decoding, downmix, streaming soxr resampling, the windows of `ast_audio.infer.window_starts`, scored in
batches), so memory is bounded by one batch of windows, never by the file. `detect_events` smooths each class's
window scores with a median filter, thresholds them with hysteresis and turns runs of active windows into events.

Event times (the definition the tests check). Window i covers samples [s_i, e_i) and has centre c_i. Every instant
of the file belongs to the window whose centre is nearest: window i "owns" the cell [b_i, b_{i+1}) with
b_0 = 0, b_i = (c_{i-1} + c_i) / 2, b_N = duration. With the regular hop H the cells are the hop-long stretches
centred on the window centres (the first cell reaches back to 0, the last one on to the end of the file). An event
over the active windows i..j runs from onset b_i to offset b_{j+1}. A model whose window score crosses the threshold
when the sound fills half of the window (a sound [a, b] longer than a window) therefore gives an onset and offset
within half a hop of a and b; a model that fires on less of the window gives earlier onsets (see docs/events.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..errors import ConfigError
from .tagger import top_labels

if TYPE_CHECKING:
    from .tagger import Tagger

EVENT_FORMATS = ("json", "csv", "audacity", "srt")


# ----------------------------------------------------------------------------------------------------------------------
# Streaming window scores


@dataclass(frozen=True)
class Timeline:
    """Window scores over a whole recording.

    starts_s / ends_s: (N,) float64 window bounds in seconds; scores: (N, C) float32 probabilities (sigmoid for
    multi-label models, softmax otherwise); labels: the C class names; duration_s: the recording's length at the
    model rate; hop_s / window_s: the requested hop and window (the last window may start less than a hop after
    the one before, see `ast_audio.infer`).
    """

    starts_s: torch.Tensor
    ends_s: torch.Tensor
    scores: torch.Tensor
    labels: tuple[str, ...]
    duration_s: float
    hop_s: float
    window_s: float

    @property
    def centres_s(self) -> torch.Tensor:
        return (self.starts_s + self.ends_s) / 2

    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) start and end seconds of the cell each window owns (nearest window centre; module docstring)."""
        centres = self.centres_s.numpy().astype(np.float64)
        bounds = np.concatenate([[0.0], (centres[:-1] + centres[1:]) / 2, [self.duration_s]])  # (N + 1,)
        return bounds[:-1], bounds[1:]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """JSON-ready: duration, hop, window, labels and per-window scores (all classes, or the top_k per window)."""
        windows = []
        for i in range(self.scores.shape[0]):
            row = self.scores[i]
            if top_k is None:
                scores = {label: round(float(v), 6) for label, v in zip(self.labels, row.tolist(), strict=True)}
            else:
                scores = {label: round(v, 6) for label, v in top_labels(row, self.labels, top_k)}
            windows.append({"start_s": round(float(self.starts_s[i]), 6), "end_s": round(float(self.ends_s[i]), 6),
                            "scores": scores})
        return {"duration_s": round(self.duration_s, 6), "hop_s": round(self.hop_s, 6),
                "window_s": round(self.window_s, 6), "labels": list(self.labels), "windows": windows}


def score_stream(tagger: Tagger, source: str | os.PathLike | torch.Tensor, *, window_s: float | None = None,
                 hop_s: float | None = None, batch_size: int = 8,
                 progress: Callable[[float, float], None] | None = None) -> Timeline:
    """Score every window of a file (streamed) or a (N,) waveform at the model rate.

    The windows, and their scores, are those of `Tagger.tag` (both run `Tagger.stream_scores`): placed as
    `ast_audio.infer.window_starts` places them, cut while the file is decoded (`ast_audio.infer.stream_windows`).

    Args:
        tagger: the model, its front end and labels.
        source: an audio path (any rate and channel count libsndfile reads) or a 1-D float waveform at
            `tagger.sample_rate`.
        window_s, hop_s: as in `Tagger.tag` (defaults: the model's input length, half of it).
        batch_size: windows per forward pass; memory ~ batch_size windows of audio and features.
        progress: called as progress(seconds_done, total_seconds) after each batch (total from the header).

    Returns:
        The Timeline of window scores.
    """
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    window, hop = tagger.window_and_hop(window_s, hop_s)
    rate = tagger.sample_rate
    if isinstance(source, torch.Tensor):
        name, total_s = "waveform", source.shape[-1] / rate
    else:
        from ..audio.io import load_audio_info

        name, total_s = str(source), load_audio_info(source).duration_s  # the header's length, for progress
    report = None if progress is None else (lambda _index, done: progress(min(done / rate, total_s), total_s))
    (scored,) = tagger.stream_scores([source], window, hop, batch_size, names=[name], progress=report)
    duration_s = scored.num_samples / rate
    if progress is not None:
        progress(duration_s, duration_s)
    return Timeline(starts_s=torch.tensor(scored.starts, dtype=torch.float64) / rate,
                    ends_s=torch.tensor(scored.ends, dtype=torch.float64) / rate,
                    scores=scored.scores.float(), labels=tuple(tagger.labels), duration_s=duration_s,
                    hop_s=hop / rate, window_s=window / rate)


# ----------------------------------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class EventConfig:
    """How window scores become events.

    threshold: the high threshold for every class, unless `thresholds` names the class (e.g. from `calibrate`).
    hysteresis: the low threshold is hysteresis * high: an event starts at a window scoring >= high and goes on
        while the (smoothed) score stays >= low. 1.0 = a single threshold.
    median_windows: odd median-filter length over windows (edges padded with the nearest window); 1 = off.
    min_duration_s: events shorter than this are dropped (after merging).
    merge_gap_s: events of the same class with at most this gap between them are merged.
    only / exclude: class names to keep / drop (checked against the model's labels).
    """

    threshold: float = 0.5
    thresholds: Mapping[str, float] | None = None
    hysteresis: float = 0.5
    median_windows: int = 1
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.hysteresis <= 1.0:
            raise ConfigError(f"hysteresis must be in (0, 1] (low threshold = hysteresis * high), got "
                              f"{self.hysteresis}")
        if not (isinstance(self.median_windows, int) and self.median_windows >= 1 and self.median_windows % 2 == 1):
            raise ConfigError(f"median_windows must be an odd integer >= 1, got {self.median_windows!r}")
        if not self.min_duration_s >= 0 or not self.merge_gap_s >= 0:
            raise ConfigError(f"min_duration_s and merge_gap_s must be >= 0, got {self.min_duration_s} and "
                              f"{self.merge_gap_s}")
        for label, value in (self.thresholds or {}).items():
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"threshold for {label!r} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class Event:
    """One detected event: class label, onset and offset in seconds, peak (unsmoothed) window score."""

    label: str
    onset_s: float
    offset_s: float
    score: float

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "onset_s": round(self.onset_s, 6), "offset_s": round(self.offset_s, 6),
                "score": round(self.score, 6)}


def check_labels(names: Sequence[str], labels: Sequence[str], where: str = "") -> None:
    """Raise a one-line ConfigError if any of `names` is not one of the model's `labels` (`where`: e.g. a file)."""
    known = set(labels)
    unknown = [n for n in names if n not in known]
    if unknown:
        examples = ", ".join(repr(n) for n in list(labels)[:5])
        more = f" (and {len(labels) - 5} more)" if len(labels) > 5 else ""
        place = f" in {where}" if where else ""
        raise ConfigError(f"unknown class name(s) {', '.join(repr(n) for n in unknown[:5])}{place}; the model's "
                          f"classes are {examples}{more}; check spelling and case")


def selected_classes(labels: Sequence[str], only: Sequence[str] | None = None,
                     exclude: Sequence[str] = ()) -> list[int]:
    """Indices of the classes kept by `only` / `exclude` (names checked against `labels`)."""
    check_labels(list(only or ()) + list(exclude), labels)
    keep = set(only) if only is not None else set(labels)
    drop = set(exclude)
    return [i for i, label in enumerate(labels) if label in keep and label not in drop]


def median_smooth(scores: np.ndarray, kernel: int) -> np.ndarray:
    """(N, C) -> (N, C): running median over `kernel` (odd) windows along N, edges padded with the nearest row."""
    if kernel <= 1 or scores.shape[0] == 0:
        return scores.copy()
    half = kernel // 2
    padded = np.pad(scores, ((half, half), (0, 0)), mode="edge")  # (N + 2 half, C)
    view = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=0)  # (N, C, kernel)
    return np.median(view, axis=-1)


def hysteresis_runs(x: np.ndarray, high: float, low: float) -> list[tuple[int, int]]:
    """Runs [i, j] (inclusive) of a 1-D score: start where x >= high, continue while x >= low."""
    runs = []
    i, n = 0, x.shape[0]
    while i < n:
        if x[i] >= high:
            j = i
            while j + 1 < n and x[j + 1] >= low:
                j += 1
            runs.append((i, j))
            i = j + 1
        else:
            i += 1
    return runs


def detect_events(timeline: Timeline, config: EventConfig = EventConfig()) -> list[Event]:
    """Per-class events from window scores (see EventConfig and the module docstring); sorted by onset, label."""
    labels = timeline.labels
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where="the per-class thresholds")
    classes = selected_classes(labels, config.only, config.exclude)
    raw = timeline.scores.numpy().astype(np.float64)  # (N, C)
    smooth = median_smooth(raw, config.median_windows)
    cell_start, cell_end = timeline.cells()
    events: list[Event] = []
    for c in classes:
        high = float((config.thresholds or {}).get(labels[c], config.threshold))
        low = config.hysteresis * high
        merged: list[list[float]] = []  # [onset, offset, peak]
        for i, j in hysteresis_runs(smooth[:, c], high, low):
            onset, offset, peak = float(cell_start[i]), float(cell_end[j]), float(raw[i:j + 1, c].max())
            if merged and onset - merged[-1][1] <= config.merge_gap_s:
                merged[-1][1] = offset
                merged[-1][2] = max(merged[-1][2], peak)
            else:
                merged.append([onset, offset, peak])
        events.extend(Event(labels[c], on, off, peak) for on, off, peak in merged
                      if off - on >= config.min_duration_s)
    events.sort(key=lambda e: (e.onset_s, e.label))
    return events


# ----------------------------------------------------------------------------------------------------------------------
# Output formats


def srt_time(seconds: float) -> str:
    """Seconds -> SRT time HH:MM:SS,mmm (rounded to the millisecond)."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _clean(text: str) -> str:
    return re.sub(r"[\t\r\n]+", " ", text)


def format_events(events: Sequence[Event], fmt: Literal["json", "csv", "audacity", "srt"], *,
                  file: str | None = None) -> str:
    """Events as text.

    json: a list of {"file"?, "label", "onset_s", "offset_s", "score"}; csv: header file,label,onset,offset,score
    (seconds to the microsecond); audacity: a label track, one `onset<TAB>offset<TAB>label` line per event;
    srt: numbered subtitles `HH:MM:SS,mmm --> HH:MM:SS,mmm` with the text `label (score)`.
    """
    if fmt == "json":
        items = [({"file": file} if file is not None else {}) | e.to_dict() for e in events]
        return json.dumps(items, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "label", "onset", "offset", "score"])
        for e in events:
            writer.writerow([file or "", e.label, f"{e.onset_s:.6f}", f"{e.offset_s:.6f}", f"{e.score:.6f}"])
        return buffer.getvalue()
    if fmt == "audacity":
        return "".join(f"{e.onset_s:.6f}\t{e.offset_s:.6f}\t{_clean(e.label)}\n" for e in events)
    if fmt == "srt":
        blocks = [f"{n}\n{srt_time(e.onset_s)} --> {srt_time(e.offset_s)}\n{_clean(e.label)} ({e.score:.2f})\n"
                  for n, e in enumerate(events, 1)]
        return "\n".join(blocks)
    raise ConfigError(f"unknown event format {fmt!r}; expected one of {', '.join(EVENT_FORMATS)}")


# ----------------------------------------------------------------------------------------------------------------------
# Per-class thresholds


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
    from ..utils import atomic_write_text

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


# ----------------------------------------------------------------------------------------------------------------------
# Helpers for the commands


def parse_names(values: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Class names from comma-separated option values, checked against `labels`.

    AudioSet names can contain commas ("Male speech, man speaking"), so the longest run of comma-separated
    pieces that is a label is taken whole; anything else is a single name (and reported if unknown).
    """
    known = set(labels)
    names: list[str] = []
    for value in values:
        if value.strip() in known:
            names.append(value.strip())
            continue
        pieces = [p.strip() for p in value.split(",")]
        i = 0
        while i < len(pieces):
            match, end = pieces[i], i + 1  # default: one piece (reported below if unknown)
            for j in range(len(pieces), i, -1):  # the longest run of pieces that is a label
                found = next((c for c in (", ".join(pieces[i:j]), ",".join(pieces[i:j])) if c in known), None)
                if found is not None:
                    match, end = found, j
                    break
            if match:
                names.append(match)
            i = end
    check_labels(names, labels)
    return names


def read_window(path: str | os.PathLike, sample_rate: int, start_s: float, num_samples: int) -> torch.Tensor:
    """Samples [start_s, start_s + num_samples / rate) of a file, decoded in blocks (the rest is never held)."""
    start = round(start_s * sample_rate)
    parts, received, kept = [], 0, 0
    from ..audio.io import stream_audio

    for chunk in stream_audio(path, sample_rate):
        lo, hi = max(0, start - received), min(chunk.shape[0], start + num_samples - received)
        if hi > lo:
            parts.append(chunk[lo:hi])
            kept += hi - lo
        received += chunk.shape[0]
        if kept >= num_samples:
            break
    if not parts:
        raise ConfigError(f"{path}: start {start_s:g} s is past the end of the audio ({received / sample_rate:g} s)")
    return torch.from_numpy(np.concatenate(parts))


def filter_top(scores: torch.Tensor, labels: Sequence[str], *, top_k: int,
               thresholds: Mapping[str, float] | None = None, keep: Sequence[int] | None = None
               ) -> list[tuple[str, float]]:
    """Best (label, score) pairs among the classes in `keep` (default all); with `thresholds`, only the classes
    listed there whose score reaches their threshold (all of them, best first, not capped at top_k)."""
    index = list(range(len(labels))) if keep is None else list(keep)
    if thresholds is not None:
        index = [i for i in index if labels[i] in thresholds and float(scores[i]) >= thresholds[labels[i]]]
        index.sort(key=lambda i: -float(scores[i]))
        return [(labels[i], float(scores[i])) for i in index]
    index.sort(key=lambda i: -float(scores[i]))
    return [(labels[i], float(scores[i])) for i in index[:top_k]]
