"""File -> scores -> events: the one pipeline behind `ast-audio events` and `calibrate --truth`, the server's
/v1/events and the archive job (`ast_audio.infer.archive.events_job`).

`EventPipeline(tagger, config, window_s=, hop_s=, rollup=)` owns every step and every default:

1. decode the file once (a path is streamed block by block; a waveform is used as it is);
2. score it, by the kind of model (`event_windows` holds the windows' defaults):
   - a clip model: sliding windows (default half the model's input, every tenth of that:
     `ast_audio.infer.events.default_window_s` / `default_hop_s`), scored as `score_stream` streams them;
   - a frame model (`ASTConfig.frame_head`): windows of the model's input with hop = window (each sample scored
     once; `hop_s` of half the window keeps each window's centre), frame scores stitched on one gapless grid of
     frame columns (`ast_audio.infer.frames.score_frames`), one pass per window;
3. roll the scores up to the AudioSet parents (`rollup=True`, `ast_audio.labels.rollup`);
4. detect events with `config` (`EventConfig()` by default: the command's rule), its options left unset filled by
   the model's kind (`EventConfig.for_kind`: median 3 columns, min duration and merge gap 0.2 s for a frame model;
   off for a clip model). Frame scores enter `detect_events`
   as a `Timeline` whose rows are the frame columns, so one detector serves both kinds: its overlap-add grid over
   gapless columns is the columns themselves. The energy refinement ("auto": clip models only) reads the
   recording's `Energy`, measured from the same decoded samples (`EnergyMeter`), never from a second read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import column_hop_samples
from ..errors import ConfigError
from ..labels import check_labels, rollup_scores, selected_classes
from ..labels import rollup as rollup_labels
from .events import Energy, EnergyMeter, Event, EventConfig, default_hop_s, default_window_s, detect_events
from .frames import score_frames
from .stream import Timeline
from .tagger import Tagger, score_stream

AudioSource = str | os.PathLike | torch.Tensor


def is_frame_model(model: Any) -> bool:
    """True for a model with a frame head (an `AST` or an ONNX graph of one)."""
    return bool(getattr(model, "has_frame_head", False))


@dataclass(frozen=True)
class EventWindows:
    """The model passes of event detection, in seconds.

    Clip model: windows of `window_s` every `hop_s` (their scores are overlap-added, `EventConfig.grid`).
    Frame model (`frames`): windows of the model's input placed on its frame grid every `hop_s` = `window_s`
    columns' worth of time (the columns one input scores), or with `overlap` every half of that, each window keeping
    its centre; `frame_s` is one column (0.1 s for AST).
    """

    window_s: float
    hop_s: float
    frames: bool = False
    overlap: bool = False
    frame_s: float | None = None


def event_windows(tagger: Tagger, window_s: float | None = None, hop_s: float | None = None) -> EventWindows:
    """The windows for events with `tagger`'s model: the given ones, checked, else the defaults of its kind.

    Clip model: `default_window_s` (half the input), `default_hop_s` (a tenth of the window); checked by
    `Tagger.window_and_hop`. Frame model: its input, hop = window; `hop_s` may instead be half the window (50%
    overlap). Raises ConfigError (one line) for values the model cannot use.
    """
    if not is_frame_model(tagger.model):
        window_s = default_window_s(tagger.max_window_s) if window_s is None else window_s
        hop_s = default_hop_s(window_s) if hop_s is None else hop_s
        tagger.window_and_hop(window_s, hop_s)
        return EventWindows(window_s, hop_s)
    model, rate = tagger.model, tagger.sample_rate
    column = column_hop_samples(model.config, model.frontend)  # samples per frame column
    t_dim = model.config.grid[1]
    frame_s, full, half = column / rate, t_dim * column / rate, max(1, t_dim // 2) * column / rate
    near = frame_s / 2  # values within half a column mean that column count

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{what}: a frame model scores windows of its input ({tagger.max_window_s:g} s, "
                           f"{t_dim} frame columns of {frame_s:g} s) every {full:g} s (hop = window, the default) or "
                           f"every {half:g} s (50% overlap, each window's centre kept); leave out --window and give "
                           f"--hop {full:g} or {half:g}")

    if window_s is not None and min(abs(window_s - full), abs(window_s - tagger.max_window_s)) > near:
        raise refuse(f"window {window_s:g} s")
    if hop_s is None or abs(hop_s - full) <= near:
        return EventWindows(full, full, frames=True, frame_s=frame_s)
    if abs(hop_s - half) <= near:
        return EventWindows(full, half, frames=True, overlap=True, frame_s=frame_s)
    raise refuse(f"hop {hop_s:g} s")


@dataclass
class ScoredFile:
    """One recording scored: its `Timeline` (window scores, or frame columns for a frame model; rolled up where
    asked), the `Energy` of the same decoded samples where the refinement uses it (clip models), and the number
    of model passes."""

    name: str
    timeline: Timeline
    energy: Energy | None
    passes: int


@dataclass
class FileEvents:
    """`EventPipeline.run`'s result: the scores and the events detected on them."""

    name: str
    timeline: Timeline
    events: list[Event]
    passes: int


class EventPipeline:
    """File -> scores -> events with one model (see the module docstring).

    Args:
        tagger: the loaded model (a `Tagger`).
        config: the detection rule (`EventConfig()`: the events command's defaults). Options left None take the
            defaults of the model's kind (`EventConfig.for_kind`; `self.config` holds the resolved rule). Its class
            names (thresholds, only, exclude) are checked here against the labels scored (rolled up where `rollup`).
        window_s, hop_s: the passes (`event_windows`; None = the defaults of the model's kind).
        rollup: add the AudioSet parents' scores (max over their subtree) after the model's classes.
        batch_size: windows per forward pass.
    """

    def __init__(self, tagger: Tagger, config: EventConfig | None = None, *, window_s: float | None = None,
                 hop_s: float | None = None, rollup: bool = False, batch_size: int = 8) -> None:
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.tagger = tagger
        self.windows = event_windows(tagger, window_s, hop_s)
        self.config = (config if config is not None else EventConfig()).for_kind(self.windows.frames)
        self.batch_size = batch_size
        self.labels, self.groups = rollup_labels(tagger.labels) if rollup else (tagger.labels, None)
        if self.config.thresholds:
            check_labels(list(self.config.thresholds), self.labels, where="the per-class thresholds")
        selected_classes(self.labels, self.config.only, self.config.exclude)  # unknown names fail before decoding

    @property
    def frames(self) -> bool:
        """True when the model is a frame model (frame scores, one pass per window)."""
        return self.windows.frames

    @property
    def uses_energy(self) -> bool:
        """Whether detection refines with the recording's energy: "energy", or "auto" with a clip model."""
        return self.config.refine == "energy" or (self.config.refine == "auto" and not self.frames)

    def run(self, source: AudioSource, name: str | None = None,
            progress: Callable[[float, float], None] | None = None, sample_rate: int | None = None) -> FileEvents:
        """Score `source` (a path, or a (N,) waveform at `sample_rate` Hz) and detect its events."""
        scored = self.score(source, name, progress, sample_rate)
        return FileEvents(scored.name, scored.timeline, self.detect(scored), scored.passes)

    def detect(self, scored: ScoredFile) -> list[Event]:
        return detect_events(scored.timeline, self.config, scored.energy)

    def score(self, source: AudioSource, name: str | None = None,
              progress: Callable[[float, float], None] | None = None, sample_rate: int | None = None) -> ScoredFile:
        """Decode `source` once and score it: the rolled-up `Timeline`, and the `Energy` where it is used.

        sample_rate: the rate of a waveform `source` (a numpy array or torch tensor) in Hz, required for one (as
            `score_stream` requires it); it is resampled to the model's rate. A path carries its own rate.
        progress: called as progress(seconds_done, total_seconds) (clip models: after each batch; frame models:
        at the end).
        """
        from ..audio.io import as_waveform, is_waveform

        if is_waveform(source):  # (N,) at sample_rate -> (M,) float32 at the model's rate, checked
            name = name if name is not None else "waveform"
            source = as_waveform(source, sample_rate, self.tagger.sample_rate, name)
        name = name if name is not None else str(source)
        timeline, energy, passes = self._frames(source, progress) if self.frames else self._windows(source, progress)
        if self.groups is not None:  # (N, C) -> (N, C'): the model's classes, then the parents they roll up to
            timeline = dataclasses.replace(timeline, scores=rollup_scores(timeline.scores, self.groups),
                                           labels=self.labels)
        return ScoredFile(name, timeline, energy, passes)

    def score_files(self, paths: Mapping[str, str | os.PathLike],
                    on_error: Callable[[str, Exception], None] | None = None,
                    progress: Callable[[float, float], None] | None = None,
                    ) -> tuple[dict[str, Timeline], dict[str, Energy]]:
        """Score several recordings ({key: path}): their timelines and energies by key. A recording that cannot
        be decoded is passed to `on_error(path, error)` and left out (without `on_error` the error is raised).
        progress: called as progress(recordings_done, total) before each one and at the end."""
        from ..errors import AstAudioError

        timelines: dict[str, Timeline] = {}
        energies: dict[str, Energy] = {}
        for done, (key, path) in enumerate(paths.items()):
            if progress is not None:
                progress(done, len(paths))
            try:
                scored = self.score(path)
            except (AstAudioError, OSError) as exc:
                if on_error is None:
                    raise
                on_error(str(path), exc)
                continue
            timelines[key] = scored.timeline
            if scored.energy is not None:
                energies[key] = scored.energy
        if progress is not None:
            progress(len(paths), len(paths))
        return timelines, energies

    def _windows(self, source: AudioSource,
                 progress: Callable[[float, float], None] | None) -> tuple[Timeline, Energy | None, int]:
        """A clip model: window scores, streamed; the energy from the same blocks as they pass."""
        meter = EnergyMeter(self.tagger.sample_rate) if self.uses_energy else None
        rate = self.tagger.sample_rate if isinstance(source, torch.Tensor) else None  # `score` resampled it
        timeline = score_stream(self.tagger, source, window_s=self.windows.window_s, hop_s=self.windows.hop_s,
                                batch_size=self.batch_size, progress=progress, sample_rate=rate,
                                on_chunk=meter.add if meter is not None else None)
        return timeline, meter.energy() if meter is not None else None, int(timeline.scores.shape[0])

    def _frames(self, source: AudioSource,
                progress: Callable[[float, float], None] | None) -> tuple[Timeline, Energy | None, int]:
        """A frame model: the file decoded whole (once), frame scores stitched on the gapless column grid."""
        from ..audio.io import load_audio

        rate = self.tagger.sample_rate
        waveform = load_audio(source, sample_rate=rate) if not isinstance(source, torch.Tensor) else source
        frames = score_frames(self.tagger.model, waveform, overlap=self.windows.overlap, batch_size=self.batch_size,
                              device=self.tagger.device)
        spans = torch.from_numpy(np.ascontiguousarray(frames.spans, dtype=np.float64))  # (num_columns, 2)
        timeline = Timeline(starts_s=spans[:, 0].clone(), ends_s=spans[:, 1].clone(), scores=frames.scores.float(),
                            labels=frames.labels, duration_s=frames.duration_s, hop_s=self.windows.hop_s,
                            window_s=self.windows.window_s, frame_s=self.windows.frame_s)
        energy = Energy.from_chunks([waveform.detach().float().cpu().numpy()], rate) if self.uses_energy else None
        if progress is not None:
            progress(frames.duration_s, frames.duration_s)
        return timeline, energy, frames.windows
