"""Live audio: tag a stream as it arrives, hop by hop, and detect events causally.

An AudioSet AST expects its whole input window of context (10.24 s); padding a short chunk costs the same compute
and loses accuracy. So `StreamingTagger` keeps a rolling context of one window and moves it by a hop: each time
W more-than-enough samples have arrived for the next window on the grid 0, H, 2H, ... (W window, H hop, model
rate), that window is scored. The latency a user sees is the wait for the hop plus one window's compute.

Input blocks may have any size, sample rate and channel count: channels are averaged and checked as `load_audio`
does (`ast_audio.audio.io.checked_mono`) and the rate is converted with soxr's streaming resampler (quality HQ,
as `stream_audio` uses), so the windows, and their scores, are those that `events` computes from a file of the same
audio (the regular windows; a live stream has no end-aligned final window). Only the samples the next window needs
are kept: at most one window plus one block.

Events use the rules of `ast_audio.infer.events` (same `EventConfig`: median smoothing over windows, hysteresis
thresholds, minimum duration, merge gap, only/exclude, per-class thresholds), made causal by `CausalEvents`:
- the median over k windows of window i is known when window i + k // 2 has been scored (k // 2 hops later);
- window i owns the cell [b_i, b_{i+1}), b_i the midpoint between its centre and the previous window's centre
  (b_0 = 0), as offline; an event's onset b_i is reported in the hop where it is decided: when the run has reached
  `min_duration_s` (so an event that will be dropped as too short is never opened); its offset b_{j+1} when the
  smoothed score has fallen below the low threshold and no later onset can be merged into it any more
  (`merge_gap_s`). With the same window scores, the events are exactly those of `detect_events` (tested).

When scoring cannot keep up with a real-time source (`drop_late`), windows whose audio is already more than a hop
old while a newer window is ready are skipped and counted (`LiveHop.skipped`), so the output stays current instead
of drifting behind; the first skip carries a one-time `warning`. The cell of the next scored window then widens
(cells are always midpoints between scored windows' centres).

Frame models (`ASTConfig.frame_head`; `ast_audio.infer.frames`) stream differently: their scores are per time column
of the patch grid (0.1 s for AST), on the file path's gapless grid (column g spans [g, g + 1) x the column hop c from
the stream's first sample), and a hop's columns are final when the hop arrives, so latency = hop + one pass:
- hop k (k = 1, 2, ...) ends at sample e_k = k H (H = hop samples, at least one column, at most the t_dim columns of
  one model input; default `FRAME_LIVE_HOP_S`). It owns the grid columns completed since the previous hop:
  [floor(e_{k-1} / c), floor(e_k / c)) (a column straddling a hop's end belongs to the next hop, whose end it has
  reached);
- they are scored by one pass over the window that ends at the hop: the model input starting at grid column
  max(0, floor(e_k / c) - t_dim) (so the hop's last column is the window's last column), holding the stream's
  samples from there up to e_k (at most the model's input length), padded as the front end pads a short clip
  (`score_frame_clips`, the code that scores the file path's windows);
- at the end of the stream the remaining columns (the last one partial, ending with the stream) are the next hop's,
  cut at the stream's end: the window that hop would have had, holding the samples up to the stream's end.
What they equal: hop k's columns are what the file path's window code gives for that window (same cut, same
padding). With H = t_dim columns (hop = window) these windows are the ones `score_frames` places on the audio received
up to each hop's end, so hop k's columns equal `score_frames(audio[:e_k]).scores[(k - 1) t_dim:]` exactly, and the
last hop's columns those of `score_frames(audio)` on the whole stream (tested). They are not `score_frames` of the
whole stream for the other hops: its windows also hold the audio past their last column (0.155 s for AST, of which
the last column's patch sees 75 ms; the padding reaches every column through attention), which live is not yet there.
A hop's `scores` are the max of its columns' scores per class (its `top`), its `frames` the columns' scores. Events
use `CausalEvents` over the columns (one column = one cell, the median over columns): they equal `detect_events` on the
same frame scores as a `Timeline` whose windows are the columns (tested). With `drop_late`, late hops are not scored
one by one: the ready hops get one pass, the window ending at the newest (the others counted in `skipped`), and their
columns stay on the grid unless more than a window's worth is waiting (then the oldest are dropped).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
import torch

from ..audio.features import FeatureExtractor
from ..audio.io import RESAMPLE_QUALITY, checked_mono
from ..errors import AstAudioError, AudioInputError, ConfigError
from ..labels import check_labels, selected_classes
from .events import TIME_TOLERANCE_S, Event, EventConfig, median_smooth
from .frames import score_frame_clips
from .names import PCM_FORMATS
from .tagger import Tagger
from .windowing import Windowing, live_windowing, resolve
from .windowing import frame_grid as model_frame_grid
from .windowing import is_frame_model as windowing_is_frame_model

PCM_DTYPES = dict(zip(PCM_FORMATS, (np.dtype("<i2"), np.dtype("<f4")), strict=True))


@dataclass(frozen=True)
class OpenedEvent:
    """An event whose onset has just been decided (it is still going on): label, onset time, score so far."""

    label: str
    onset_s: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "onset_s": round(self.onset_s, 6), "score": round(self.score, 6)}


@dataclass
class LiveHop:
    """What one hop of a stream produced. Times are seconds from the stream's first sample.

    scores: (C,) probabilities of the window [start_s, end_s); None on the hop `close()` adds, without a window, to
    report the events that the end of the stream closed (start_s = end_s = the stream's end).
    smoothed: (C,) median-smoothed scores of the latest window whose smoothing is decided (the window centred at
    `smoothed_s`; k // 2 windows back), or None before the first.
    opened / closed: events decided in this hop; active: labels of the events open now.
    skipped: windows skipped so far because scoring fell behind; warning: set once, on the hop where the first
    window was skipped.
    compute_s: seconds spent scoring this window (front end and model).

    A frame model's hop (module docstring) also has `frames`: (n, C) probabilities of the grid columns
    first_column .. first_column + n - 1 that the hop made final, spanning `frame_spans` (n, 2) seconds (column_s
    each; the last column of a stream ends with it). Then `scores` is their max per class, [start_s, end_s) the window
    scored (it ends at the hop's end), `smoothed` is per column and `skipped` counts hops scored with a later one.
    """

    index: int
    start_s: float
    end_s: float
    scores: np.ndarray | None
    labels: tuple[str, ...]
    smoothed: np.ndarray | None = None
    smoothed_s: float | None = None
    opened: list[OpenedEvent] = field(default_factory=list)
    closed: list[Event] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    skipped: int = 0
    compute_s: float = 0.0
    warning: str | None = None
    frames: np.ndarray | None = None
    first_column: int = 0
    frame_spans: np.ndarray | None = None
    column_s: float = 0.0

    def top(self, k: int, keep: Sequence[int] | None = None) -> list[tuple[str, float]]:
        """The k best (label, score) of this window among the classes `keep` (default all), best first."""
        if self.scores is None:
            return []
        index = np.arange(len(self.labels)) if keep is None else np.asarray(list(keep), dtype=np.int64)
        order = index[np.argsort(-self.scores[index], kind="stable")][:k]
        return [(self.labels[i], float(self.scores[i])) for i in order]

    def to_dict(self, top_k: int = 5, keep: Sequence[int] | None = None) -> dict[str, Any]:
        """JSON-ready: one object per hop (`listen --format jsonl`, the server's /v1/stream); a frame model's hop
        adds "frames" (`frames_dict`)."""
        top = self.top(top_k, keep)
        return {"index": self.index, "start_s": round(self.start_s, 6), "end_s": round(self.end_s, 6),
                "top": [{"label": label, "score": round(score, 6)} for label, score in top],
                **({"frames": self.frames_dict([label for label, _ in top])} if self.frames is not None else {}),
                "opened": [e.to_dict() for e in self.opened], "closed": [e.to_dict() for e in self.closed],
                "active": list(self.active), "skipped": self.skipped, "compute_s": round(self.compute_s, 6),
                **({"warning": self.warning} if self.warning else {})}

    def frames_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        """The hop's frame scores of `classes` (its top labels): {"first": grid column, "start_s", "end_s",
        "column_s", "classes": [...], "scores": [[score of each class] per column]}."""
        assert self.frames is not None and self.frame_spans is not None
        index = [self.labels.index(label) for label in classes]
        spans = self.frame_spans
        return {"first": self.first_column, "start_s": round(float(spans[0, 0]), 6),
                "end_s": round(float(spans[-1, 1]), 6), "column_s": round(self.column_s, 6), "classes": list(classes),
                "scores": np.round(self.frames[:, index], 6).tolist()}


@dataclass
class _Track:
    """One class's event in progress: onset, peak raw score, offset once its run ended (None while running)."""

    onset: float
    peak: float
    offset: float | None = None
    reported: bool = False


class CausalEvents:
    """`detect_events`' rules applied window by window (see the module docstring).

    push(centre_s, raw (C,)) for every scored window in order, then finish(duration_s) at the end of the stream.
    Both return (opened, closed, smoothed, smoothed_centre). `hop_s` is the smallest distance between two window
    centres (the grid's hop): it bounds how soon the next cell can start, which decides when an onset is certain to
    survive `min_duration_s` and when an offset can no longer be merged with a later onset. `frames`: the scores
    are a frame model's columns (options of `config` left None take that kind's defaults, `EventConfig.for_kind`).
    """

    def __init__(self, labels: Sequence[str], config: EventConfig, hop_s: float, *, frames: bool = False) -> None:
        self.labels = tuple(labels)
        config = config.for_kind(frames)  # options left None: the defaults of the kind of scores (`frames`)
        self.config = config
        self.hop_s = hop_s
        if config.thresholds:
            check_labels(list(config.thresholds), self.labels, where="the per-class thresholds")
        self.classes = selected_classes(self.labels, config.only, config.exclude)
        self.high = np.array([float((config.thresholds or {}).get(self.labels[c], config.threshold))
                              for c in self.classes])
        self.low = config.hysteresis * self.high
        self.half = config.median_windows // 2
        self.rows: deque[np.ndarray] = deque(maxlen=2 * self.half + 1)  # raw (C,) rows around the next window
        self.centres: deque[float] = deque(maxlen=2 * self.half + 1)  # their centres
        self.pushed = 0  # windows pushed
        self.decided = 0  # windows whose smoothed score has been used
        self.previous_centre: float | None = None  # centre of the last decided window
        self.tracks: dict[int, _Track] = {}  # class index -> its event in progress

    def push(self, centre_s: float, raw: np.ndarray) -> tuple[list[OpenedEvent], list[Event], np.ndarray | None,
                                                              float | None]:
        self.rows.append(np.asarray(raw, dtype=np.float64))
        self.centres.append(centre_s)
        self.pushed += 1
        if self.pushed - self.decided <= self.half:  # the median of the next window needs k // 2 later windows
            return [], [], None, None
        return self._decide()

    def finish(self, duration_s: float) -> tuple[list[OpenedEvent], list[Event]]:
        """Decide the last k // 2 windows (the median pads with the last row, as offline) and close every event at
        the end of the stream, as the last cell reaches the end of the recording offline."""
        opened: list[OpenedEvent] = []
        closed: list[Event] = []
        while self.decided < self.pushed:
            o, c, _, _ = self._decide(end_s=duration_s)
            opened += o
            closed += c
        for c in sorted(self.tracks):
            track = self.tracks[c]
            if track.offset is None:
                track.offset = duration_s
            o, e = self._close(c, track)
            opened += o
            closed += e
        self.tracks.clear()
        return opened, closed

    def open_labels(self) -> list[str]:
        """Labels of the events reported open and not closed yet."""
        return [self.labels[c] for c, t in sorted(self.tracks.items()) if t.reported and t.offset is None]

    def _decide(self, end_s: float | None = None) -> tuple[list[OpenedEvent], list[Event], np.ndarray, float]:
        """Decide the next window; `end_s`: the stream's end, known once it has ended (no cell starts after it)."""
        i = self.decided
        rows = list(self.rows)  # windows max(0, i - half) .. min(pushed - 1, i + half)
        first = self.pushed - len(rows)  # index of rows[0]
        lo, hi = max(0, i - self.half) - first, min(self.pushed - 1, i + self.half) - first
        block = np.stack(rows[lo:hi + 1])  # (n, C), its ends are the stream's ends wherever it is cut short
        smooth_row = median_smooth(block, self.config.median_windows)[i - first - lo]  # (C,) edge-padded as offline
        raw = self.rows[i - first]
        centres = list(self.centres)
        centre = centres[len(centres) - (self.pushed - i)]
        cell_start = 0.0 if self.previous_centre is None else (self.previous_centre + centre) / 2
        self.previous_centre = centre
        self.decided += 1
        earliest_next_cell = centre + self.hop_s / 2  # the next window's centre is at least a hop later
        if end_s is not None:  # ... unless the stream ends first (a last partial column is shorter than a hop)
            earliest_next_cell = min(earliest_next_cell, end_s)
        opened: list[OpenedEvent] = []
        closed: list[Event] = []
        gap = self.config.merge_gap_s + TIME_TOLERANCE_S  # as `detect_events` compares
        shortest = self.config.min_duration_s - TIME_TOLERANCE_S
        for k, c in enumerate(self.classes):
            v, track = smooth_row[c], self.tracks.get(c)
            if track is not None and track.offset is None:  # in a run: continue while >= low
                if v >= self.low[k]:
                    track.peak = max(track.peak, float(raw[c]))
                else:
                    track.offset = cell_start
            elif v >= self.high[k]:  # a run starts: merged into the last event if it ended at most merge_gap ago
                if track is not None and cell_start - track.offset <= gap:
                    track.offset = None
                    track.peak = max(track.peak, float(raw[c]))
                else:
                    if track is not None:
                        o, e = self._close(c, track)
                        opened += o
                        closed += e
                    track = self.tracks[c] = _Track(onset=cell_start, peak=float(raw[c]))
            track = self.tracks.get(c)
            if track is None:
                continue
            if track.offset is None:
                if not track.reported and earliest_next_cell - track.onset >= shortest:
                    track.reported = True  # it lasts at least to the next cell: it survives min_duration_s
                    opened.append(OpenedEvent(self.labels[c], track.onset, track.peak))
            elif earliest_next_cell - track.offset > gap:  # no later onset can merge with it
                o, e = self._close(c, track)
                opened += o
                closed += e
                del self.tracks[c]
        return opened, closed, smooth_row, centre

    def _close(self, c: int, track: _Track) -> tuple[list[OpenedEvent], list[Event]]:
        """The finished event of class c, if it is long enough (opened too if its onset was not reported yet)."""
        assert track.offset is not None
        if track.offset - track.onset < self.config.min_duration_s - TIME_TOLERANCE_S:
            return [], []
        event = Event(self.labels[c], track.onset, track.offset, track.peak)
        opened = [] if track.reported else [OpenedEvent(self.labels[c], track.onset, track.peak)]
        return opened, [event]


def to_float_block(block: Any, channels: int) -> np.ndarray:
    """A block of samples -> (n, channels) float32 in [-1, 1]: float arrays pass through, int16 is scaled by 1/32768.
    A (n,) block is one channel."""
    data = np.asarray(block)
    if data.ndim == 1:
        data = data[:, None]  # (n,) -> (n, 1)
    if data.ndim != 2 or data.shape[1] != channels:
        raise AudioInputError(f"expected blocks of shape (n, {channels}) (or (n,) for one channel), got "
                              f"{tuple(data.shape)}")
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if not np.issubdtype(data.dtype, np.floating):
        raise AudioInputError(f"expected float samples in [-1, 1] or int16, got dtype {data.dtype}")
    return data.astype(np.float32, copy=False)


# A float sample beyond this is not float audio (decoded files are refused the same way, audio/io.py).
INT_SCALED_PEAK = 2.0


class PcmDecoder:
    """Raw interleaved PCM bytes (s16le or f32le, `channels` channels) -> (n, channels) float32 blocks; a partial
    frame at the end of one chunk is kept for the next (pipes and sockets split bytes anywhere)."""

    def __init__(self, dtype: str, channels: int) -> None:
        if dtype not in PCM_DTYPES:
            raise ConfigError(f"PCM format must be one of {', '.join(PCM_DTYPES)}, got {dtype!r}")
        if not (isinstance(channels, int) and channels >= 1):
            raise ConfigError(f"channels must be a positive integer, got {channels!r}")
        self.dtype, self.channels = PCM_DTYPES[dtype], channels
        self.frame_bytes = self.dtype.itemsize * channels
        self.rest = b""

    def decode(self, data: bytes) -> np.ndarray:
        data = self.rest + bytes(data)
        usable = len(data) - len(data) % self.frame_bytes
        self.rest = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels)  # (n * C,) -> (n, C)
        if self.dtype == np.dtype("<i2"):
            return samples.astype(np.float32) / 32768.0
        out = samples.astype(np.float32)
        with np.errstate(invalid="ignore"):
            wild = out.size > 0 and not (np.isfinite(out).all() and float(np.abs(out).max()) <= INT_SCALED_PEAK)
        if wild:  # 16-bit PCM read as floats gives NaN, inf and huge values: say which format it probably is
            raise AudioInputError("PCM read as f32le holds NaN, infinite or out-of-range samples (far beyond "
                                  "[-1, 1]): it is probably 16-bit PCM; use --dtype s16le (WebSocket: "
                                  '"format": "s16le"), or send float32 samples in [-1, 1]')
        return out


def is_frame_model(tagger: Tagger) -> bool:
    """Whether the tagger's model has a frame head (then live streams are scored per column, module docstring)."""
    return windowing_is_frame_model(tagger.model)


def frame_grid(tagger: Tagger) -> tuple[int, int]:
    """(column hop in samples, time columns per model input) of a frame model: (1600, 101) for AST at 16 kHz."""
    return model_frame_grid(tagger.model)


def measure_window_s(tagger: Tagger, window: int, repeats: int = 2) -> float:
    """Seconds one window of `window` samples takes to score here (front end and model; a frame model's pass over
    its input for the frame scores): the fastest of `repeats` runs on silence, so the first run's one-off costs
    (allocation, graph warm-up) do not count."""
    frames = is_frame_model(tagger)
    extractor = FeatureExtractor(tagger.model.frontend) if frames else None
    silence = torch.zeros(tagger.model.frontend.input_samples if frames else window)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        if extractor is not None:
            score_frame_clips(tagger.model, extractor, [silence], tagger.device)
        else:
            tagger.score_windows([silence])
        best = min(best, time.perf_counter() - t0)
    return best


def check_hop_keeps_up(tagger: Tagger, windowing: Windowing, precision: str, hop_s: float) -> None:
    """Refuse `windowing`'s hop (the user's `hop_s`, for the message) shorter than one window's compute on this
    machine (measured): the stream would fall further behind with every window. The message says what to use
    instead."""
    took = measure_window_s(tagger, windowing.window)
    if windowing.hop_s < took:
        raise AstAudioError(f"--hop {hop_s:g} s is shorter than one window's compute here "
                            f"({took:.3f} s measured for a {windowing.window_s:g} s window, precision "
                            f"{precision}); use --hop {took * 1.2:.3f} or more, a cheaper --precision, or "
                            "--allow-skip to skip windows")


class StreamingTagger:
    """Tag a live stream window by window (see the module docstring).

    Args:
        tagger: the model, its front end and labels.
        sample_rate: rate of the blocks fed, in Hz (resampled to the model's rate when different).
        channels: channels of the blocks fed (averaged).
        window_s, hop_s: window and hop in seconds, checked by `ast_audio.infer.windowing.live_windowing` (clip
            models: defaults the model's input length and half of it; frame models: no window_s, hop_s from one
            column to the input's columns, default `FRAME_LIVE_HOP_S`).
        windowing: the window and hop as one value (`live_windowing`), instead of window_s / hop_s.
        events: the event rules (`EventConfig`, as `events` uses; options left None take the model kind's
            defaults, `EventConfig.for_kind`).
        drop_late: a real-time source: skip windows that are more than a hop old while a newer one is ready.
        batch_size: windows scored per forward pass when several are ready and none is skipped.

    A tagger whose model has a frame head streams frame scores (`frames`; module docstring).
    `feed(block)` returns the hops that block completed; `close()` flushes the resampler, scores what completes and
    closes the open events at the end of the stream.
    """

    def __init__(self, tagger: Tagger, sample_rate: int, channels: int = 1, *, window_s: float | None = None,
                 hop_s: float | None = None, events: EventConfig | None = None, drop_late: bool = False,
                 batch_size: int = 8, windowing: Windowing | None = None) -> None:
        if not (isinstance(sample_rate, int) and not isinstance(sample_rate, bool) and sample_rate > 0):
            raise ConfigError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        if not (isinstance(channels, int) and not isinstance(channels, bool) and channels >= 1):
            raise ConfigError(f"channels must be a positive integer, got {channels!r}")
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.tagger = tagger
        self.input_rate, self.channels = sample_rate, channels
        self.rate = tagger.sample_rate
        self.windowing = resolve(live_windowing, tagger.model, windowing, window_s, hop_s)
        self.window, self.hop = self.windowing.window, self.windowing.hop  # samples at the model rate
        self.window_s, self.hop_s = self.windowing.window_s, self.windowing.hop_s
        self.frames = self.windowing.frames
        if self.frames != is_frame_model(tagger):
            raise ConfigError("the windowing is for the other kind of model (frame vs clip); build it with "
                              "ast_audio.infer.windowing.live_windowing from this model")
        if self.frames:
            self.column, self.t_dim = frame_grid(tagger)
            self.extractor = FeatureExtractor(tagger.model.frontend)
            self.columns_done = 0  # grid columns emitted (or dropped) so far
        # A frame model's events are decided per column (one cell each), a clip model's per window.
        self.events = CausalEvents(tagger.labels, events or EventConfig(),
                                   self.column / self.rate if self.frames else self.hop_s, frames=self.frames)
        self.drop_late, self.batch_size = drop_late, batch_size
        self.resampler = (None if sample_rate == self.rate else
                          soxr.ResampleStream(sample_rate, self.rate, 1, dtype="float32", quality=RESAMPLE_QUALITY))
        self.buffer = np.zeros(0, dtype=np.float32)  # model-rate samples [buf_start, received)
        self.buf_start = self.received = self.next_start = 0
        self.index = 0  # windows (a frame model's hops) placed so far (scored or skipped)
        self.skipped = 0
        self.warned = False
        self.closed = False

    @property
    def labels(self) -> tuple[str, ...]:
        return self.tagger.labels

    @property
    def held_samples(self) -> int:
        """Model-rate samples held now (at most one window plus one block, resampled)."""
        return int(self.buffer.shape[0])

    def feed(self, block: Any, arrived: float | None = None) -> list[LiveHop]:
        """Add a block ((n, channels) or (n,) float in [-1, 1] or int16, at `sample_rate`); return the hops it
        completed. `arrived`: `time.monotonic()` when the oldest of its samples arrived (default now), for
        `drop_late`."""
        if self.closed:
            raise ConfigError("the stream was closed; start a new StreamingTagger")
        mono = checked_mono("stream", to_float_block(block, self.channels), "stream")  # (n, C) -> (n,)
        if self.resampler is not None:
            mono = self.resampler.resample_chunk(mono, last=False)
        self._append(mono)
        return self._run(time.monotonic() if arrived is None else arrived)

    def close(self) -> list[LiveHop]:
        """End of the stream: the resampler's tail is scored, open events are closed at the stream's end (reported
        on the last hop, or on a hop of its own with no window when no window completes)."""
        if self.closed:
            return []
        self.closed = True
        if self.resampler is not None:
            self._append(self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        hops = self._run(time.monotonic())
        if self.frames:
            hops += self._last_frames()
        opened, closed = self.events.finish(self.received / self.rate)
        if opened or closed:
            if not hops:
                end = self.received / self.rate
                hops = [LiveHop(index=self.index, start_s=end, end_s=end, scores=None, labels=self.labels,
                                skipped=self.skipped)]
            hops[-1].opened += opened
            hops[-1].closed += closed
            hops[-1].active = []
        return hops

    def run(self, blocks: Iterable[Any]) -> Iterator[LiveHop]:
        """Every hop of a whole stream of blocks (then `close`)."""
        for block in blocks:
            yield from self.feed(block)
        yield from self.close()

    def _append(self, samples: np.ndarray) -> None:
        if samples.shape[0]:
            self.buffer = np.concatenate([self.buffer, samples]) if self.buffer.size else samples.copy()
            self.received += samples.shape[0]

    def _take(self) -> tuple[int, np.ndarray]:
        """The next window on the grid (its samples are all there), and drop the samples no later window needs."""
        start = self.next_start
        lo = start - self.buf_start
        samples = self.buffer[lo:lo + self.window].copy()
        self.next_start += self.hop
        self.index += 1
        keep_from = min(self.next_start, self.received)
        self.buffer = self.buffer[keep_from - self.buf_start:]
        self.buf_start = keep_from
        return start, samples

    def _run(self, arrived: float) -> list[LiveHop]:
        if self.frames:
            return self._run_frames(arrived)
        hops: list[LiveHop] = []
        pending: list[tuple[int, int, np.ndarray]] = []  # (index, start, samples) to score in one batch
        while self.next_start + self.window <= self.received:
            newer_ready = self.next_start + self.hop + self.window <= self.received
            if self.drop_late and newer_ready and time.monotonic() - arrived > self.hop_s:
                self._take()  # more than a hop late and a newer window is there: skip this one
                self.skipped += 1
                continue
            index = self.index
            start, samples = self._take()
            pending.append((index, start, samples))
            if self.drop_late or len(pending) == self.batch_size:  # real time: score each as soon as it is there
                hops += self._score(pending)
                pending = []
        if pending:
            hops += self._score(pending)
        return hops

    def _score(self, pending: list[tuple[int, int, np.ndarray]]) -> list[LiveHop]:
        t0 = time.perf_counter()
        scores = self.tagger.score_windows([torch.from_numpy(s) for _, _, s in pending]).numpy()  # (B, C)
        compute_s = (time.perf_counter() - t0) / len(pending)
        hops = []
        for (index, start, _), row in zip(pending, scores, strict=True):
            start_s, end_s = start / self.rate, (start + self.window) / self.rate
            opened, closed, smoothed, smoothed_s = self.events.push((start_s + end_s) / 2, row)
            hop = LiveHop(index=index, start_s=start_s, end_s=end_s, scores=row, labels=self.labels,
                          smoothed=smoothed, smoothed_s=smoothed_s, opened=opened, closed=closed,
                          active=self.events.open_labels(), skipped=self.skipped, compute_s=compute_s)
            if self.skipped and not self.warned:
                self.warned = True
                hop.warning = (f"falling behind: scoring one window takes about {compute_s:.3f} s against a "
                               f"{self.hop_s:g} s hop; skipping windows to stay current (counted in 'skipped')")
            hops.append(hop)
        return hops

    # ------------------------------------------------------------------------------------------------------------
    # Frame models (module docstring): hop k ends at sample k * hop and owns the columns completed since hop k - 1.

    def _run_frames(self, arrived: float) -> list[LiveHop]:
        ready: list[tuple[int, int]] = []  # (hop index, end sample) of the hops that have arrived
        while (self.index + 1) * self.hop <= self.received:
            ready.append((self.index, (self.index + 1) * self.hop))
            self.index += 1
        if self.drop_late and len(ready) > 1 and time.monotonic() - arrived > self.hop_s:
            self.skipped += len(ready) - 1  # late: one pass, the window ending at the newest hop, scores them all
            ready = ready[-1:]
        passes = [(index, end, end // self.column, end // self.column) for index, end in ready]
        step = 1 if self.drop_late else self.batch_size  # real time: score each hop as soon as it is there
        return [hop for i in range(0, len(passes), step) for hop in self._score_frames(passes[i:i + step])]

    def _last_frames(self) -> list[LiveHop]:
        """At the end of the stream: the columns not emitted yet (the last one partial) are the next hop's, scored by
        the window that hop would have had, cut at the stream's end."""
        total = -(-self.received // self.column)  # ceil: the grid's columns, the last one partial
        if total <= self.columns_done or self.received < self.tagger.model.frontend.window_samples:
            return []
        index, end = self.index, self.received
        self.index += 1
        # The window that hop would have had; when the stream ends in the column where that hop would have ended,
        # the window reaches that column too.
        window_end = max(total, (index + 1) * self.hop // self.column)
        return self._score_frames([(index, end, total, window_end)])

    def _score_frames(self, passes: list[tuple[int, int, int, int]]) -> list[LiveHop]:
        """One pass each: (hop index, end sample, columns complete, last column + 1 of its window) -> LiveHops."""
        clips, plans = [], []
        for index, end, upto, window_end in passes:
            first = max(0, window_end - self.t_dim)  # the window's first grid column
            emit = max(self.columns_done, upto - self.t_dim, first)  # columns older than the window are dropped
            start = first * self.column
            clip_end = min(end, start + self.tagger.model.frontend.input_samples)
            clips.append(torch.from_numpy(self.buffer[start - self.buf_start: clip_end - self.buf_start].copy()))
            plans.append((index, start, end, first, emit, upto))
            self.columns_done = upto
        t0 = time.perf_counter()
        probs = score_frame_clips(self.tagger.model, self.extractor, clips, self.tagger.device).numpy()  # (B, t, C)
        compute_s = (time.perf_counter() - t0) / len(passes)
        keep_from = min(self.received, max(0, self.columns_done + 1 - self.t_dim) * self.column)
        self.buffer = self.buffer[keep_from - self.buf_start:]  # no later window starts before this
        self.buf_start = keep_from
        return [self._frame_hop(plan, rows, compute_s) for plan, rows in zip(plans, probs, strict=True)]

    def _frame_hop(self, plan: tuple[int, int, int, int, int, int], probs: np.ndarray, compute_s: float) -> LiveHop:
        index, start, end, first, emit, upto = plan
        frames = probs[emit - first: upto - first].astype(np.float64)  # (n, C) the hop's columns
        column_s = self.column / self.rate
        spans = np.stack([np.arange(emit, upto) * column_s, np.arange(emit + 1, upto + 1) * column_s], axis=1)
        spans[-1, 1] = min(spans[-1, 1], self.received / self.rate)  # the stream's last column ends with it
        hop = LiveHop(index=index, start_s=start / self.rate, end_s=end / self.rate, scores=frames.max(axis=0),
                      labels=self.labels, skipped=self.skipped, compute_s=compute_s, frames=frames,
                      first_column=emit, frame_spans=spans, column_s=column_s)
        for g, row in zip(range(emit, upto), frames, strict=True):
            # Each column is one cell: its centre as if whole (the partial last column's cell ends at the stream's
            # end when `finish` closes the events there), so the cells are the columns' spans.
            opened, closed, smoothed, smoothed_s = self.events.push((g + 0.5) * column_s, row)
            hop.opened += opened
            hop.closed += closed
            if smoothed is not None:
                hop.smoothed, hop.smoothed_s = smoothed, smoothed_s
        hop.active = self.events.open_labels()
        if self.skipped and not self.warned:
            self.warned = True
            hop.warning = (f"falling behind: one pass takes about {compute_s:.3f} s against a {self.hop_s:g} s hop; "
                           "scoring the hops that are waiting in one pass to stay current (counted in 'skipped')")
        return hop
