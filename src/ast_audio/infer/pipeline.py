"""File -> scores -> events: the one pipeline behind `ast-audio events` and `calibrate --truth`, the server's
/v1/events and the archive job (`ast_audio.infer.archive.events_job`).

`EventPipeline(tagger, config, window_s=, hop_s=, rollup=)` owns every step and every default:

1. decode the file once (a path is streamed block by block; a waveform is used as it is);
2. score it, by the kind of model (the windows: one `Windowing`, `ast_audio.infer.windowing.event_windowing`):
   - a clip model: sliding windows (default half the model's input, every tenth of that), scored as
     `score_stream` streams them;
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

import numpy as np
import torch

from ..errors import ConfigError
from ..labels import check_labels, rollup_scores, selected_classes
from ..labels import rollup as rollup_labels
from .events import Energy, EnergyMeter, Event, EventConfig, detect_events
from .frames import score_frames
from .stream import Timeline
from .tagger import Tagger, score_stream
from .windowing import Windowing, event_windowing, resolve

AudioSource = str | os.PathLike | torch.Tensor


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
        window_s, hop_s: the passes in seconds (`event_windowing`; None = the defaults of the model's kind).
        windowing: the passes as one value (`event_windowing`), instead of window_s / hop_s.
        rollup: add the AudioSet parents' scores (max over their subtree) after the model's classes.
        batch_size: windows per forward pass.
    """

    def __init__(self, tagger: Tagger, config: EventConfig | None = None, *, window_s: float | None = None,
                 hop_s: float | None = None, rollup: bool = False, batch_size: int = 8,
                 windowing: Windowing | None = None) -> None:
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.tagger = tagger
        self.windowing = resolve(event_windowing, tagger.model, windowing, window_s, hop_s)
        self.config = (config if config is not None else EventConfig()).for_kind(self.windowing.frames)
        self.batch_size = batch_size
        self.labels, self.groups = rollup_labels(tagger.labels) if rollup else (tagger.labels, None)
        if self.config.thresholds:
            check_labels(list(self.config.thresholds), self.labels, where="the per-class thresholds")
        selected_classes(self.labels, self.config.only, self.config.exclude)  # unknown names fail before decoding

    @property
    def frames(self) -> bool:
        """True when the model is a frame model (frame scores, one pass per window)."""
        return self.windowing.frames

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
        timeline = score_stream(self.tagger, source, windowing=self.windowing, batch_size=self.batch_size,
                                progress=progress, sample_rate=rate,
                                on_chunk=meter.add if meter is not None else None)
        return timeline, meter.energy() if meter is not None else None, int(timeline.scores.shape[0])

    def _frames(self, source: AudioSource,
                progress: Callable[[float, float], None] | None) -> tuple[Timeline, Energy | None, int]:
        """A frame model: the file decoded whole (once), frame scores stitched on the gapless column grid."""
        from ..audio.io import load_audio

        rate = self.tagger.sample_rate
        waveform = load_audio(source, sample_rate=rate) if not isinstance(source, torch.Tensor) else source
        frames = score_frames(self.tagger.model, waveform, overlap=self.windowing.overlap, batch_size=self.batch_size,
                              device=self.tagger.device)
        spans = torch.from_numpy(np.ascontiguousarray(frames.spans, dtype=np.float64))  # (num_columns, 2)
        timeline = Timeline(starts_s=spans[:, 0].clone(), ends_s=spans[:, 1].clone(), scores=frames.scores.float(),
                            labels=frames.labels, duration_s=frames.duration_s, hop_s=self.windowing.hop_s,
                            window_s=self.windowing.window_s, frame_s=self.windowing.frame_s)
        energy = Energy.from_chunks([waveform.detach().float().cpu().numpy()], rate) if self.uses_energy else None
        if progress is not None:
            progress(frames.duration_s, frames.duration_s)
        return timeline, energy, frames.windows
