"""Sound events: a recording's window scores (a `Timeline`) -> per-class events with onset and offset.

The window scores come from `ast_audio.infer.tagger.score_stream` (streamed, so memory is bounded by one batch of
windows, never by the file). `detect_events` smooths each class's window scores with a median filter, thresholds
them with hysteresis and turns runs of active windows into events. Output formats are `ast_audio.infer.formats`,
per-class thresholds `ast_audio.infer.calibrate`.

Event times (the definition the tests check). Window i covers samples [s_i, e_i) and has centre c_i. Every instant
of the file belongs to the window whose centre is nearest: window i "owns" the cell [b_i, b_{i+1}) with
b_0 = 0, b_i = (c_{i-1} + c_i) / 2, b_N = duration. With the regular hop H the cells are the hop-long stretches
centred on the window centres (the first cell reaches back to 0, the last one on to the end of the file). An event
over the active windows i..j runs from onset b_i to offset b_{j+1}. A model whose window score crosses the threshold
when the sound fills half of the window (a sound [a, b] longer than a window) therefore gives an onset and offset
within half a hop of a and b; a model that fires on less of the window gives earlier onsets (see docs/events.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..labels import check_labels, selected_classes
from .stream import Timeline


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
