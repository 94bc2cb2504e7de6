"""Tagging: a loaded AST + its front end, scoring files or waveforms of any length in batches.

Clips up to the model's input length (`model.frontend.duration_s`, 10.255 s for 1024 frames) are one window,
zero-padded in the log-mel domain as the reference does. The reference ignores everything after the first
1024 frames (spec §5.5); here longer audio is scored with overlapping sliding windows instead (placed as
`ast_audio.infer.stream` describes), and the window scores are aggregated into clip scores. Files are streamed
block by block, never held whole (`ast_audio.infer.stream.stream_scores`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..audio.features import FeatureExtractor
from ..audio.io import is_waveform, require_sample_rate
from ..errors import AudioInputError, CheckpointError, ConfigError
from ..labels import resolve_labels, top_labels
from ..model import AST
from ..model.scores import probabilities
from .stream import AudioSource, ScoredWindows, Timeline, stream_scores
from .windowing import Windowing, resolve, tag_windowing


@dataclass
class WindowScores:
    """Scores of one analysis window, times in seconds from the start of the clip."""

    start_s: float
    end_s: float
    scores: torch.Tensor  # (C,) probabilities
    top: list[tuple[str, float]]  # top-k (label, score), best first


@dataclass
class TagResult:
    """Tags of one clip.

    `scores` holds the clip-level probability of every class (C,), aggregated over `windows` (max or mean);
    `top` the `top_k` best of them as (label, score), best first.
    """

    name: str
    duration_s: float
    labels: tuple[str, ...]
    scores: torch.Tensor  # (C,)
    top: list[tuple[str, float]]
    windows: list[WindowScores] = field(default_factory=list)
    aggregate: str = "max"

    def to_dict(self, all_scores: bool = False) -> dict[str, Any]:
        """JSON-ready dict: file, duration_s, labels (top-k), windows; with `all_scores`, every class's score."""
        out: dict[str, Any] = {
            "file": self.name,
            "duration_s": round(self.duration_s, 6),
            "aggregate": self.aggregate,
            "labels": [{"label": label, "score": score} for label, score in self.top],
            "windows": [{"start_s": round(w.start_s, 6), "end_s": round(w.end_s, 6),
                         "labels": [{"label": label, "score": score} for label, score in w.top]}
                        for w in self.windows],
        }
        if all_scores:
            out["scores"] = dict(zip(self.labels, self.scores.tolist(), strict=True))
        return out


class Tagger:
    """Scores audio with a loaded AST: features, batching, sliding windows, top-k labels.

    Args:
        model: an AST (e.g. from `ast_audio.weights.checkpoint.load_model`); put in eval mode.
        device: where to run the model ("cpu", "cuda", ...); the model is moved there.
    """

    def __init__(self, model: AST, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.features = FeatureExtractor(model.frontend)
        self.labels: tuple[str, ...] = tuple(model.labels)

    @classmethod
    def from_checkpoint(cls, source: str | os.PathLike, device: str | torch.device = "cpu", **overrides: Any) -> Tagger:
        """Load any checkpoint `load_model` understands (folder, .pth, hub id) and wrap it."""
        from ..weights.checkpoint import load_model  # the weights layer is above this one: imported when used

        return cls(load_model(source, device=device, **overrides), device=device)

    @property
    def sample_rate(self) -> int:
        return self.model.frontend.sample_rate

    @property
    def max_window_s(self) -> float:
        """The longest audio one model input holds, in seconds (10.255 s for 1024 frames at 16 kHz)."""
        return self.model.frontend.duration_s

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised features -> (B, C) probabilities: sigmoid if the model is multi-label, else softmax.

        Raises:
            CheckpointError: the model produced NaN or infinite logits. Loading refuses non-finite weights and the
                front end non-finite samples, so this means weights that overflow on this input; a NaN score is
                never returned as a result.
        """
        with torch.inference_mode():
            logits = self.model(inputs.to(self.device)).float().cpu()
        finite = torch.isfinite(logits)
        if not finite.all():
            raise CheckpointError(f"the model produced non-finite scores ({int((~finite).sum())} NaN or infinite "
                                  f"logits of {logits.numel()}) for finite input; the checkpoint is broken (weights "
                                  "that overflow) or the input is far out of range; try another checkpoint")
        return probabilities(logits, self.model.multi_label)

    def windowing(self, window_s: float | None = None, hop_s: float | None = None) -> Windowing:
        """Tagging's windows for window_s / hop_s (seconds; None = defaults: the model's input, half of it), checked
        (`ast_audio.infer.windowing.tag_windowing`)."""
        return tag_windowing(self.model, window_s, hop_s)

    def window_and_hop(self, window_s: float | None = None, hop_s: float | None = None) -> tuple[int, int]:
        """`windowing(window_s, hop_s)` as sample counts (window, hop)."""
        windowing = self.windowing(window_s, hop_s)
        return windowing.window, windowing.hop

    def score_windows(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """B windows (W_i,) at the model rate -> (B, C) probabilities (the model input from `featurize`, or the
        waveforms themselves for an ONNX graph with the fbank inside)."""
        same = all(w.shape[0] == windows[0].shape[0] for w in windows)
        if getattr(self.model, "takes_waveforms", False):  # an ONNX graph with the fbank inside (export/runtime.py)
            parts = [torch.stack(list(windows))] if same else [w.unsqueeze(0) for w in windows]  # (B, W) | B x (1, W_i)
            return torch.cat([self.scores(p) for p in parts])
        return self.scores(self.featurize(windows))

    def featurize(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """B windows (W_i,) at the model rate -> (B, T, F) model input. Windows of one length are featurised as one
        (B, W) batch; a clip shorter than the window among them makes it per-item fbanks, zero-padded in the log-mel
        domain to the model's frames (as the reference pads)."""
        same = all(w.shape[0] == windows[0].shape[0] for w in windows)
        return self.features(torch.stack(list(windows)) if same else list(windows))  # (B, W) | B x (W_i,) -> (B, T, F)

    def stream_scores(self, inputs: Sequence[AudioSource], windowing: Windowing, batch_size: int = 8, *,
                      names: Sequence[str] | None = None,
                      on_error: Callable[[int, AudioInputError], None] | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      sample_rate: int | None = None,
                      on_chunk: Callable[[int, Any], None] | None = None) -> Iterator[ScoredWindows]:
        """Score every window of every input with this model; yields one ScoredWindows per input, in input order.

        `ast_audio.infer.stream.stream_scores` with this Tagger's `score_windows` and front end (see it for the
        arguments), placing the windows `windowing` says (`ast_audio.infer.windowing`); `sample_rate` is the rate of
        the waveforms among `inputs`.
        """
        windowing = resolve(tag_windowing, self.model, windowing, None, None)  # checks it is at this model's rate
        return stream_scores(self.score_windows, self.model.frontend, inputs, windowing.window, windowing.hop,
                             batch_size, names=names,
                             on_error=on_error, progress=progress, sample_rate=sample_rate, on_chunk=on_chunk)

    def tag(self, inputs: AudioSource | Sequence[AudioSource], top_k: int = 10, window_s: float | None = None,
            hop_s: float | None = None, aggregate: Literal["max", "mean"] = "max", batch_size: int = 8,
            names: Sequence[str] | None = None,
            on_error: Callable[[int, AudioInputError], None] | None = None, *,
            sample_rate: int | None = None, windowing: Windowing | None = None) -> list[TagResult]:
        """Tag files or waveforms.

        Args:
            inputs: a path or a (N,) float waveform (numpy array or torch tensor, mono, in [-1, 1]), or a list of
                them. Paths are decoded block by block with `stream_audio` (mono, resampled; memory does not grow
                with the file's length); a bad file raises `AudioInputError` naming it.
            top_k: labels kept per clip and per window (capped at the number of classes).
            window_s: sliding-window length in seconds; default the model's input length (`max_window_s`).
            hop_s: seconds between window starts, in (0, window_s]; default window_s / 2 (50% overlap).
            aggregate: clip score per class = "max" (an event anywhere counts) or "mean" over the windows.
            batch_size: windows per forward pass; windows of all inputs are batched together.
            names: display names for the inputs (default: the path, or "waveform_<i>").
            on_error: called as on_error(index, error) for an input that cannot be used, which is then left out of
                the results (default: raise).
            sample_rate: the waveforms' rate in Hz, required when `inputs` holds any (as transformers' pipelines
                take `sampling_rate`); they are resampled to `self.sample_rate` with soxr (`as_waveform`).
            windowing: the windows as one value (`ast_audio.infer.windowing.tag_windowing`), instead of window_s /
                hop_s (e.g. built once by a caller that checks it before decoding).

        Returns:
            One TagResult per input (per good input with `on_error`), in order.
        """
        if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1):
            raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")
        if aggregate not in ("max", "mean"):
            raise ConfigError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        windowing = resolve(tag_windowing, self.model, windowing, window_s, hop_s)

        items = as_items(inputs)
        if names is not None and len(names) != len(items):
            raise ConfigError(f"got {len(names)} names for {len(items)} inputs")
        rate = self.sample_rate
        results = []
        for scored in self.stream_scores(items, windowing, batch_size, names=names, on_error=on_error,
                                         sample_rate=sample_rate):
            per_window = scored.scores  # (W_i, C)
            clip = per_window.max(dim=0).values if aggregate == "max" else per_window.mean(dim=0)
            windows = [WindowScores(start_s=s / rate, end_s=e / rate, scores=row,
                                    top=top_labels(row, self.labels, top_k))
                       for s, e, row in zip(scored.starts, scored.ends, per_window, strict=True)]
            results.append(TagResult(name=scored.name, duration_s=scored.num_samples / rate, labels=self.labels,
                                     scores=clip, top=top_labels(clip, self.labels, top_k), windows=windows,
                                     aggregate=aggregate))
        return results


def tag_files(paths: Sequence[str | Path], checkpoint: str | os.PathLike, **kwargs: Any) -> list[TagResult]:
    """One-shot helper: load `checkpoint` and tag `paths` (keywords as in `Tagger.tag`)."""
    return Tagger.from_checkpoint(checkpoint).tag(list(paths), **kwargs)


def as_items(inputs: AudioSource | Sequence[AudioSource]) -> list[AudioSource]:
    """One input (a path or a waveform) or a sequence of them -> the list of inputs."""
    return [inputs] if isinstance(inputs, (str, os.PathLike)) or is_waveform(inputs) else list(inputs)


def score_stream(tagger: Tagger, source: AudioSource, *, window_s: float | None = None,
                 hop_s: float | None = None, batch_size: int = 8,
                 progress: Callable[[float, float], None] | None = None,
                 sample_rate: int | None = None, on_chunk: Callable[[Any], None] | None = None,
                 windowing: Windowing | None = None) -> Timeline:
    """Score every window of a file (streamed) or a (N,) waveform: the recording's `Timeline`.

    The windows, and their scores, are those of `Tagger.tag` (both run `Tagger.stream_scores`).

    Args:
        tagger: the model, its front end and labels.
        source: an audio path (any rate and channel count libsndfile reads) or a 1-D float waveform (numpy array
            or torch tensor) at `sample_rate`.
        window_s, hop_s: as in `Tagger.tag` (defaults: the model's input length, half of it).
        batch_size: windows per forward pass; memory ~ batch_size windows of audio and features.
        progress: called as progress(seconds_done, total_seconds) after each batch (total from the header).
        sample_rate: the waveform's rate in Hz (required for a waveform; resampled to the model's rate).
        on_chunk: called with each decoded (n,) block of samples at the model rate, in order (e.g.
            `EnergyMeter.add`: the energy from the same decoding as the scores).
        windowing: the windows as one value instead of window_s / hop_s (`ast_audio.infer.windowing`; e.g.
            `event_windowing` for event detection).
    """
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    windowing = resolve(tag_windowing, tagger.model, windowing, window_s, hop_s)
    rate = tagger.sample_rate
    if is_waveform(source):
        name, total_s = "waveform", source.shape[-1] / require_sample_rate(sample_rate)
    else:
        from ..audio.io import load_audio_info

        name, total_s = str(source), load_audio_info(source).duration_s  # the header's length, for progress
    report = None if progress is None else (lambda _index, done: progress(min(done / rate, total_s), total_s))
    see = None if on_chunk is None else (lambda _index, chunk: on_chunk(chunk))
    (scored,) = tagger.stream_scores([source], windowing, batch_size, names=[name], progress=report,
                                     sample_rate=sample_rate, on_chunk=see)
    duration_s = scored.num_samples / rate
    if progress is not None:
        progress(duration_s, duration_s)
    return Timeline(starts_s=torch.tensor(scored.starts, dtype=torch.float64) / rate,
                    ends_s=torch.tensor(scored.ends, dtype=torch.float64) / rate,
                    scores=scored.scores.float(), labels=tuple(tagger.labels), duration_s=duration_s,
                    hop_s=windowing.hop_s, window_s=windowing.window_s)


def load_onnx_tagger(path: str | os.PathLike, threads: int | None = None,
                     labels: str | os.PathLike | Sequence[str] | None = None) -> Tagger:
    """A `Tagger` running the ONNX graph at `path` (with or without the front end inside); `labels` (a CSV path or
    names) replaces the stored label names."""
    from ..export.runtime import OnnxModel

    module = OnnxModel(path, threads=threads).as_module()
    if labels is not None:
        names = tuple(resolve_labels(labels))
        if len(names) != len(module.labels):
            raise ConfigError(f"{len(names)} label names given for a graph with {len(module.labels)} classes")
        module.labels = names
    return Tagger(module)  # type: ignore[arg-type]
