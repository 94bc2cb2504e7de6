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

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..labels import check_labels, selected_classes
from .names import (
    CLIP_DETECTION,
    DEFAULT_HYSTERESIS,
    DEFAULT_THRESHOLD,
    FRAME_DETECTION,
    GRIDS,
    REFINES,
)
from .stream import Timeline

# Energy refinement: frame length, the noise floor's percentile, the shortest quiet gap that splits a sound (a click
# train's clicks are up to 80 ms apart) and the shortest loud stretch that counts.
ENERGY_FRAME_S = 0.01
FLOOR_PERCENTILE = 10.0
MIN_QUIET_S = 0.12
MIN_LOUD_S = 0.03
# Durations and gaps within this many seconds of `min_duration_s` / `merge_gap_s` count as equal to them: a frame
# model's defaults (0.2 s) are whole columns, and two column edges 0.2 s apart may differ by 0.19999999999999996 in
# floating point (the live path, `ast_audio.infer.live.CausalEvents`, compares with the same tolerance).
TIME_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class EventConfig:
    """How window scores (a clip model) or frame scores (a frame model) become events.

    `EventConfig()` is what `ast-audio events`, the server's /v1/events and the archive job do when given no option
    (they all run `ast_audio.infer.pipeline.EventPipeline`), and `ast-audio listen` and /v1/stream
    (`ast_audio.infer.live.StreamingTagger`). What depends on the kind of model: the windows
    (`ast_audio.infer.windowing.event_windowing`), the refinement ("auto") and the three options left None here
    (median_windows, min_duration_s, merge_gap_s), which `for_kind` fills with `names.CLIP_DETECTION` (1, 0 s, 0 s)
    or `names.FRAME_DETECTION` (3 columns, 0.2 s, 0.2 s); a value given is kept for either kind. `detect_events`
    fills them by the scores it is given (frame scores: `Timeline.frame_s` set).

    threshold: the high threshold for every class, unless `thresholds` names the class (e.g. from `calibrate`).
    hysteresis: the low threshold is hysteresis * high: an event starts at a window scoring >= high and goes on
        while the (smoothed) score stays >= low. 1.0 = a single threshold.
    median_windows: odd median-filter length over windows (edges padded with the nearest window); 1 = off.
        None: the kind's default (clip 1, frame 3).
    min_duration_s: events shorter than this are dropped (after merging). None: clip 0, frame 0.2 s.
    merge_gap_s: events of the same class with at most this gap between them are merged. None: clip 0, frame 0.2 s.
    only / exclude: class names to keep / drop (checked against the model's labels).
    grid: where the scores live before thresholding. "mean" (default) / "max": `score_grid`, the mean / max of the
        windows covering each piece of time between consecutive window edges (overlap-add); `median_windows` then
        counts grid pieces. Frame scores are gapless, non-overlapping columns, so their grid is the columns
        themselves. "cells": each window's score on the cell nearest its centre (the module docstring; the rule of
        the live stream, `ast_audio.infer.live.CausalEvents`).
    interpolate: place each onset (offset) where the straight line through the centres of the grid pieces on
        either side crosses the high (low) threshold, instead of at the piece's edge: sub-hop boundaries (default).
    refine: "auto" (default): "energy" when `detect_events` is given the recording's `Energy` (the pipeline
        measures it for clip models only), else "none". "energy": move each boundary to the nearest edge of a loud
        stretch of the recording (`Energy`) within `refine_search_s` (default half a window) and split an event at
        quiet gaps (`refine_with_energy`); needs the recording's `Energy`. "none": the scores alone decide.
    refine_margin_db: "loud" is this many dB above the recording's noise floor (its 10th-percentile frame level).
    """

    threshold: float = DEFAULT_THRESHOLD
    thresholds: Mapping[str, float] | None = None
    hysteresis: float = DEFAULT_HYSTERESIS
    median_windows: int | None = None
    min_duration_s: float | None = None
    merge_gap_s: float | None = None
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    grid: str = "mean"
    interpolate: bool = True
    refine: str = "auto"
    refine_search_s: float | None = None
    refine_margin_db: float = 10.0

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ConfigError(f"grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        if self.refine not in REFINES:
            raise ConfigError(f"refine must be one of {', '.join(REFINES)}, got {self.refine!r}")
        if self.refine_search_s is not None and not self.refine_search_s > 0:
            raise ConfigError(f"refine_search_s must be > 0 seconds, got {self.refine_search_s}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.hysteresis <= 1.0:
            raise ConfigError(f"hysteresis must be in (0, 1] (low threshold = hysteresis * high), got "
                              f"{self.hysteresis}")
        median = self.median_windows
        if median is not None and not (isinstance(median, int) and median >= 1 and median % 2 == 1):
            raise ConfigError(f"median_windows must be an odd integer >= 1 (or None: the model kind's default), got "
                              f"{median!r}")
        if any(v is not None and not v >= 0 for v in (self.min_duration_s, self.merge_gap_s)):
            raise ConfigError(f"min_duration_s and merge_gap_s must be >= 0 (or None: the model kind's default), "
                              f"got {self.min_duration_s} and {self.merge_gap_s}")
        for label, value in (self.thresholds or {}).items():
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"threshold for {label!r} must be in [0, 1], got {value}")

    def for_kind(self, frames: bool) -> EventConfig:
        """This rule with the options left None filled by the defaults of the model's kind: `FRAME_DETECTION` for
        a frame model's frame scores (`frames`), else `CLIP_DETECTION`. Options given are kept."""
        defaults = FRAME_DETECTION if frames else CLIP_DETECTION
        unset = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)
                 if getattr(self, f.name) is None}
        return dataclasses.replace(self, **unset) if unset else self


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


@dataclass(frozen=True)
class ScoreGrid:
    """Scores on gapless, non-overlapping pieces of time from 0 to the end of a recording.

    bounds_s: (M + 1,) increasing seconds, bounds_s[0] = 0 and bounds_s[-1] = the duration; piece m is
    [bounds_s[m], bounds_s[m + 1]). scores: (M, C) float64. labels: the C class names.
    """

    bounds_s: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]

    @property
    def centres_s(self) -> np.ndarray:
        return (self.bounds_s[:-1] + self.bounds_s[1:]) / 2


def score_grid(timeline: Timeline, reduce: str = "mean") -> ScoreGrid:
    """Window scores -> scores on the pieces of time between consecutive window edges (starts and ends, cut to
    [0, duration]): within one piece the set of covering windows does not change, so the piece's score is the
    "mean" (overlap-add: sum of the covering windows' scores over their number) or "max" of theirs.

    The mean is the default because it ramps: a piece just before a sound is covered by some windows that hold the
    sound and some that do not, so its score rises gradually across the onset and crosses 0.5 near the point where
    half of the covering windows fire. The max jumps to the first firing window's score, pushing onsets early by
    up to a window. With a regular hop H that divides the window, the pieces are H long.
    """
    if reduce not in ("mean", "max"):
        raise ConfigError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    duration = float(timeline.duration_s)
    starts = np.clip(timeline.starts_s.numpy().astype(np.float64), 0.0, duration)  # (N,)
    ends = np.clip(timeline.ends_s.numpy().astype(np.float64), 0.0, duration)  # (N,)
    scores = timeline.scores.numpy().astype(np.float64)  # (N, C)
    bounds = np.unique(np.concatenate([[0.0, duration], starts, ends]))  # (M + 1,)
    bounds = bounds[np.concatenate([[True], np.diff(bounds) > 1e-9])]  # float noise between equal edges
    m, c = len(bounds) - 1, scores.shape[1]
    if m <= 0:
        return ScoreGrid(np.array([0.0, duration]), scores[:1].copy() if len(scores) else np.zeros((1, c)),
                         timeline.labels)
    first = np.searchsorted(bounds, starts - 1e-9)  # (N,) first piece of each window
    last = np.searchsorted(bounds, ends - 1e-9)  # (N,) one past its last piece
    if reduce == "mean":
        total = np.zeros((m + 1, c))
        count = np.zeros(m + 1)
        np.add.at(total, first, scores)
        np.add.at(total, last, -scores)
        np.add.at(count, first, 1.0)
        np.add.at(count, last, -1.0)
        total, count = np.cumsum(total, axis=0)[:m], np.cumsum(count)[:m]  # (M, C), (M,)
        grid = total / np.maximum(count, 1.0)[:, None]
    else:
        grid = np.zeros((m, c))
        for i in range(scores.shape[0]):
            grid[first[i]:last[i]] = np.maximum(grid[first[i]:last[i]], scores[i])
    return ScoreGrid(bounds, grid, timeline.labels)


def _crossing(t0: float, x0: float, t1: float, x1: float, level: float) -> float:
    """Where the line from (t0, x0) to (t1, x1) reaches `level` (x0 and x1 on either side of it)."""
    if x1 == x0:
        return (t0 + t1) / 2
    return t0 + (level - x0) / (x1 - x0) * (t1 - t0)


@dataclass(frozen=True)
class Energy:
    """Short-time level of a recording: db (K,) float64, 10 log10 of the mean square of each `frame_s`-long frame
    (frame k covers [k frame_s, (k + 1) frame_s))."""

    db: np.ndarray
    frame_s: float = ENERGY_FRAME_S

    @classmethod
    def from_chunks(cls, chunks: Iterable[np.ndarray], sample_rate: int, frame_s: float = ENERGY_FRAME_S) -> Energy:
        """From (n,) sample chunks in order (e.g. `ast_audio.audio.io.stream_audio`): memory is one frame per
        `frame_s` of audio, never the samples."""
        meter = EnergyMeter(sample_rate, frame_s)
        for chunk in chunks:
            meter.add(chunk)
        return meter.energy()

    @classmethod
    def from_file(cls, path: str | os.PathLike, sample_rate: int, frame_s: float = ENERGY_FRAME_S) -> Energy:
        """Stream `path` (decoded and resampled as the scores were) into an `Energy`."""
        from ..audio.io import stream_audio

        return cls.from_chunks(stream_audio(path, sample_rate), sample_rate, frame_s)

    def loud_runs(self, margin_db: float = 10.0) -> list[tuple[float, float]]:
        """[start, end) seconds of the loud stretches: frames more than `margin_db` above the noise floor (the
        `FLOOR_PERCENTILE` percentile of the frame levels), quiet gaps shorter than `MIN_QUIET_S` filled, stretches
        shorter than `MIN_LOUD_S` dropped."""
        if self.db.size == 0:
            return []
        loud = self.db > np.percentile(self.db, FLOOR_PERCENTILE) + margin_db
        runs = _runs(loud)
        filled: list[list[int]] = []
        for a, b in runs:
            if filled and (a - filled[-1][1]) * self.frame_s < MIN_QUIET_S:
                filled[-1][1] = b
            else:
                filled.append([a, b])
        return [(a * self.frame_s, b * self.frame_s) for a, b in filled if (b - a) * self.frame_s >= MIN_LOUD_S]


class EnergyMeter:
    """An `Energy` measured while samples pass by: `add` each (n,) chunk in order, then `energy()`. Lets the one
    decoding of a file feed both the model and the refinement (`ast_audio.infer.pipeline`)."""

    def __init__(self, sample_rate: int, frame_s: float = ENERGY_FRAME_S) -> None:
        self.frame = max(1, round(frame_s * sample_rate))
        self.sample_rate = sample_rate
        self.levels: list[np.ndarray] = []  # mean squares of whole frames, in order
        self.rest = np.zeros(0, dtype=np.float64)  # samples of the frame not yet complete

    def add(self, chunk: np.ndarray) -> None:
        data = np.concatenate([self.rest, np.asarray(chunk, dtype=np.float64)])
        whole = len(data) // self.frame * self.frame
        if whole:
            self.levels.append(np.mean(data[:whole].reshape(-1, self.frame) ** 2, axis=1))  # (n // frame, frame)
        self.rest = data[whole:]

    def energy(self) -> Energy:
        """The frames so far; a last partial frame counts as a frame of its own."""
        levels = self.levels + ([np.array([np.mean(self.rest ** 2)])] if len(self.rest) else [])
        power = np.concatenate(levels) if levels else np.zeros(0)
        return Energy(10.0 * np.log10(power + 1e-12), self.frame / self.sample_rate)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) index ranges where a 1-D boolean mask is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def refine_with_energy(events: Sequence[Event], runs: Sequence[tuple[float, float]], search_s: float) -> list[Event]:
    """Boundaries moved to the recording's loud stretches (`Energy.loud_runs`).

    Each loud stretch lying at least half inside an event becomes an event of that class and score; its onset is the
    stretch's start if that lies within `search_s` before the event's onset or later (else the stretch began with
    another sound, e.g. one this event overlaps, and the score's onset stays), likewise its offset. An event with
    no such stretch is kept as it is. So window-scale boundaries snap to where the sound starts and stops, and two
    sounds of a class that the windows merged across a short quiet gap come apart.
    """
    out: list[Event] = []
    for e in events:
        inside = [(a, b) for a, b in runs if min(b, e.offset_s) - max(a, e.onset_s) >= 0.5 * (b - a)]
        if not inside:
            out.append(e)
            continue
        for a, b in inside:
            onset = a if a >= e.onset_s - search_s else e.onset_s
            offset = b if b <= e.offset_s + search_s else e.offset_s
            out.append(Event(e.label, onset, offset, e.score))
    return out


def detect_events(timeline: Timeline, config: EventConfig = EventConfig(), energy: Energy | None = None) -> list[Event]:
    """Per-class events from window scores (see EventConfig and the module docstring); sorted by onset, label.

    `energy` (the recording's `Energy`) is needed by `config.refine == "energy"`, used by "auto" when given and
    ignored by "none". Options of `config` left None take the defaults of the scores' kind (`EventConfig.for_kind`:
    frame scores when `timeline.frame_s` is set)."""
    config = config.for_kind(frames=timeline.frame_s is not None)
    if config.refine == "energy" and energy is None:
        raise ConfigError("refine='energy' needs the recording's Energy (Energy.from_file)")
    runs = energy.loud_runs(config.refine_margin_db) if config.refine != "none" and energy is not None else None
    search_s = config.refine_search_s if config.refine_search_s is not None else timeline.window_s / 2
    labels = timeline.labels
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where="the per-class thresholds")
    classes = selected_classes(labels, config.only, config.exclude)
    if config.grid == "cells":
        raw = timeline.scores.numpy().astype(np.float64)  # (N, C)
        cell_start, cell_end = timeline.cells()
        centres = timeline.centres_s.numpy().astype(np.float64)
    else:
        grid = score_grid(timeline, config.grid)
        raw = grid.scores  # (M, C)
        cell_start, cell_end, centres = grid.bounds_s[:-1], grid.bounds_s[1:], grid.centres_s
    smooth = median_smooth(raw, config.median_windows)
    n = raw.shape[0]
    events: list[Event] = []
    for c in classes:
        high = float((config.thresholds or {}).get(labels[c], config.threshold))
        low = config.hysteresis * high
        x = smooth[:, c]
        found: list[Event] = []
        merged: list[list[float]] = []  # [onset, offset, peak]
        for i, j in hysteresis_runs(x, high, low):
            onset, offset, peak = float(cell_start[i]), float(cell_end[j]), float(raw[i:j + 1, c].max())
            if config.interpolate:
                if i > 0:
                    onset = _crossing(centres[i - 1], x[i - 1], centres[i], x[i], high)
                if j + 1 < n:
                    offset = _crossing(centres[j], x[j], centres[j + 1], x[j + 1], low)
            found.append(Event(labels[c], onset, offset, peak))
        if runs is not None:
            found = refine_with_energy(found, runs, search_s)
        for e in sorted(found, key=lambda e: e.onset_s):
            if merged and e.onset_s - merged[-1][1] <= config.merge_gap_s + TIME_TOLERANCE_S:
                merged[-1][1] = max(merged[-1][1], e.offset_s)
                merged[-1][2] = max(merged[-1][2], e.score)
            else:
                merged.append([e.onset_s, e.offset_s, e.score])
        events.extend(Event(labels[c], on, off, peak) for on, off, peak in merged
                      if off - on >= config.min_duration_s - TIME_TOLERANCE_S)
    events.sort(key=lambda e: (e.onset_s, e.label))
    return events
