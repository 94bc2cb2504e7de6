"""Tagging: a loaded AST + its front end, scoring files or waveforms of any length in batches.

Clips up to the model's input length (`model.frontend.duration_s`, 10.255 s for 1024 frames) are one window,
zero-padded in the log-mel domain as the reference does. The reference ignores everything after the first
1024 frames (spec §5.5); here longer audio is scored with overlapping sliding windows instead, and the
window scores are aggregated into clip scores.

Window placement for a clip of N samples, window W and hop H samples (N > W):
starts 0, H, 2H, ... while start + W < N, then one final window aligned to the end, [N - W, N). Every window is
full length (no padding), the last one reaches the end of the file, and the final hop may be shorter than H.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .audio.features import FeatureExtractor
from .audio.io import load_audio
from .errors import AudioInputError, ConfigError
from .model import AST

AudioSource = str | os.PathLike | torch.Tensor


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


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the windows covering `num_samples` (see the module docstring); [0] if it fits one window."""
    if window <= 0 or hop <= 0:
        raise ConfigError(f"window and hop must be positive sample counts, got {window} and {hop}")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window, hop))  # every start with start + window < num_samples
    starts.append(num_samples - window)  # align the final window to the end of the clip
    return starts


def top_labels(scores: torch.Tensor, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` best (label, score) pairs of a (C,) score vector, best first."""
    values, index = scores.topk(min(k, scores.shape[0]))
    return [(labels[i], float(v)) for v, i in zip(values.tolist(), index.tolist(), strict=True)]


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
        from .weights.checkpoint import load_model

        return cls(load_model(source, **overrides), device=device)

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
        from .errors import CheckpointError  # imported here: this method is the only user in this module

        with torch.inference_mode():
            logits = self.model(inputs.to(self.device)).float().cpu()
        finite = torch.isfinite(logits)
        if not finite.all():
            raise CheckpointError(f"the model produced non-finite scores ({int((~finite).sum())} NaN or infinite "
                                  f"logits of {logits.numel()}) for finite input; the checkpoint is broken (weights "
                                  "that overflow) or the input is far out of range; try another checkpoint")
        return logits.sigmoid() if self.model.multi_label else logits.softmax(dim=-1)

    def window_and_hop(self, window_s: float | None = None, hop_s: float | None = None) -> tuple[int, int]:
        """Validate window_s / hop_s (seconds; None = defaults) and return them as sample counts (window, hop)."""
        rate, frontend = self.sample_rate, self.model.frontend

        def as_float(value: Any) -> Any:
            """Numbers as float, an int beyond float range as inf (refused below instead of overflowing in
            math.isfinite or a message's format); anything else unchanged, for the checks below to name."""
            if isinstance(value, int) and not isinstance(value, bool):
                try:
                    return float(value)
                except OverflowError:
                    return math.inf
            return value

        window_s, hop_s = as_float(window_s), as_float(hop_s)
        if window_s is None:
            window = frontend.input_samples  # exactly fills target_length frames
            window_s = window / rate
        else:
            if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
                raise ConfigError(f"window_s must be a positive number of seconds, got {window_s!r}")
            # Range-check in samples *before* rounding: a huge finite window_s (1e308) times the rate is inf, and
            # round(inf) raises OverflowError. Anything that would round above the model's input is refused here.
            if window_s * rate >= round(self.max_window_s * rate) + 0.5:
                raise ConfigError(f"window_s={window_s:g} s is longer than the model's input of "
                                  f"{self.max_window_s:g} s ({frontend.target_length} frames), so audio would be cut "
                                  f"off; use window_s <= {self.max_window_s:g}")
            window = round(window_s * rate)
            if window < frontend.window_samples:
                raise ConfigError(f"window_s={window_s:g} s is shorter than one {frontend.frame_length_ms:g} ms "
                                  "analysis frame; use a longer window")
        if hop_s is None:
            hop = max(1, window // 2)  # 50% overlap: an event cut by one window boundary is centred in another
        else:
            if not (isinstance(hop_s, (int, float)) and math.isfinite(hop_s) and 0 < hop_s <= window_s):
                raise ConfigError(f"hop_s must be in (0, window_s = {window_s:g}] seconds (a larger hop would skip "
                                  f"audio), got {hop_s!r}")
            hop = max(1, round(hop_s * rate))
        return window, hop

    def tag(self, inputs: AudioSource | Sequence[AudioSource], top_k: int = 10, window_s: float | None = None,
            hop_s: float | None = None, aggregate: Literal["max", "mean"] = "max", batch_size: int = 8,
            names: Sequence[str] | None = None) -> list[TagResult]:
        """Tag files or waveforms.

        Args:
            inputs: a path or (N,) waveform at `self.sample_rate`, or a list of them. Paths are decoded with
                `load_audio` (mono, resampled); a bad file raises `AudioInputError` naming it.
            top_k: labels kept per clip and per window (capped at the number of classes).
            window_s: sliding-window length in seconds; default the model's input length (`max_window_s`).
            hop_s: seconds between window starts, in (0, window_s]; default window_s / 2 (50% overlap).
            aggregate: clip score per class = "max" (an event anywhere counts) or "mean" over the windows.
            batch_size: windows per forward pass; windows of all inputs are batched together.
            names: display names for the inputs (default: the path, or "waveform_<i>").

        Returns:
            One TagResult per input, in order.
        """
        if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1):
            raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")
        if aggregate not in ("max", "mean"):
            raise ConfigError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        window, hop = self.window_and_hop(window_s, hop_s)

        single = isinstance(inputs, (str, os.PathLike, torch.Tensor))
        items = [inputs] if single else list(inputs)
        if names is not None and len(names) != len(items):
            raise ConfigError(f"got {len(names)} names for {len(items)} inputs")
        waveforms, item_names = [], []
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                waveforms.append(load_audio(item, sample_rate=self.sample_rate))
                item_names.append(str(item))
            elif isinstance(item, torch.Tensor):
                if item.dim() != 1:
                    raise AudioInputError(f"input {i}: expected a 1-D (N,) mono waveform at {self.sample_rate} Hz, "
                                          f"got shape {tuple(item.shape)}")
                waveforms.append(item.detach().float().cpu())
                item_names.append(f"waveform_{i}")
            else:
                raise AudioInputError(f"input {i}: expected a path or a waveform tensor, got {type(item).__name__}")
        if names is not None:
            item_names = [str(n) for n in names]

        # Every window of every input, input by input: (input index, start sample, end sample).
        starts = [window_starts(w.shape[0], window, hop) for w in waveforms]
        spans = [(i, s, min(s + window, w.shape[0])) for i, w in enumerate(waveforms) for s in starts[i]]
        window_scores = torch.empty(len(spans), len(self.labels))  # (num windows, C)
        for lo in range(0, len(spans), batch_size):
            chunk = [waveforms[i][s:e] for i, s, e in spans[lo:lo + batch_size]]
            if getattr(self.model, "takes_waveforms", False):  # an ONNX graph with the fbank inside (export.py)
                same = all(c.shape[0] == chunk[0].shape[0] for c in chunk)
                parts = [torch.stack(chunk)] if same else [c.unsqueeze(0) for c in chunk]  # (B, W) or B x (1, W_i)
                window_scores[lo:lo + len(chunk)] = torch.cat([self.scores(p) for p in parts])
                continue
            if all(c.shape[0] == chunk[0].shape[0] for c in chunk):
                batch = self.features(torch.stack(chunk))  # B x (W,) -> (B, W) -> (B, T, F)
            else:
                batch = self.features(chunk)  # clips shorter than a window: per-item fbank, padded
            window_scores[lo:lo + len(chunk)] = self.scores(batch)

        results = []
        first = 0
        for w, name, w_starts in zip(waveforms, item_names, starts, strict=True):
            rows = range(first, first + len(w_starts))  # this input's rows of window_scores
            first += len(w_starts)
            per_window = window_scores[rows.start:rows.stop]  # (W_i, C)
            clip = per_window.max(dim=0).values if aggregate == "max" else per_window.mean(dim=0)
            windows = [WindowScores(start_s=spans[j][1] / self.sample_rate, end_s=spans[j][2] / self.sample_rate,
                                    scores=window_scores[j], top=top_labels(window_scores[j], self.labels, top_k))
                       for j in rows]
            results.append(TagResult(name=name, duration_s=w.shape[0] / self.sample_rate, labels=self.labels,
                                     scores=clip, top=top_labels(clip, self.labels, top_k), windows=windows,
                                     aggregate=aggregate))
        return results


def tag_files(paths: Sequence[str | Path], checkpoint: str | os.PathLike, **kwargs: Any) -> list[TagResult]:
    """One-shot helper: load `checkpoint` and tag `paths` (keywords as in `Tagger.tag`)."""
    return Tagger.from_checkpoint(checkpoint).tag(list(paths), **kwargs)
