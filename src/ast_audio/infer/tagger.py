"""Tagging: a loaded AST + its front end, scoring files or waveforms of any length in batches.

Clips up to the model's input length (`model.frontend.duration_s`, 10.255 s for 1024 frames) are one window,
zero-padded in the log-mel domain as the reference does. The reference ignores everything after the first
1024 frames (spec §5.5); here longer audio is scored with overlapping sliding windows instead, and the
window scores are aggregated into clip scores.

Window placement for a clip of N samples, window W and hop H samples (N > W):
starts 0, H, 2H, ... while start + W < N, then one final window aligned to the end, [N - W, N). Every window is
full length (no padding), the last one reaches the end of the file, and the final hop may be shorter than H.

Files are never held whole: `Tagger.stream_scores`, the one implementation of windowed scoring behind `Tagger.tag` and
`ast_audio.events.score_stream`, decodes them block by block (`ast_audio.audio.io.stream_audio`) and cuts the windows
as the samples arrive (`stream_windows`), so memory is bounded by one batch of windows, not by the file's length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..audio.features import FeatureExtractor
from ..audio.io import BLOCK_FRAMES, stream_audio
from ..errors import AudioInputError, ConfigError
from ..model import AST

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


def stream_windows(chunks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream of (n,) float32 chunks into the windows `window_starts` places, without knowing its length.

    Yields (start sample, (W,) samples) in order. A window starting at s is cut as soon as more than s + W samples
    have arrived (window_starts takes every start with start + W < N); when the stream ends, the final window
    [N - W, N) follows, or for N <= W the whole stream [0, N) as one shorter window. Only the samples that future
    windows need are kept (the next regular window and the last W samples), so memory is about W + one chunk.
    A stream without samples yields nothing.
    """
    buffer = np.zeros(0, dtype=np.float32)  # samples [buf_start, received)
    buf_start = received = next_start = 0
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk]) if buffer.size else np.asarray(chunk, dtype=np.float32)
        received += chunk.shape[0]
        while next_start + window < received:  # window_starts: every start with start + W < N
            lo = next_start - buf_start
            yield next_start, buffer[lo:lo + window].copy()
            next_start += hop
        keep_from = min(next_start, max(0, received - window))
        if keep_from > buf_start:
            buffer = buffer[keep_from - buf_start:]
            buf_start = keep_from
    if received:
        last = max(0, received - window)  # end-aligned; 0 (the whole clip) when it fits one window
        yield last, buffer[last - buf_start:].copy()


@dataclass
class ScoredWindows:
    """The window scores of one input, as `Tagger.stream_scores` yields them; samples are at the model rate."""

    index: int  # position among the inputs
    name: str
    num_samples: int  # the input's length
    starts: list[int]  # (N,) first sample of each window
    ends: list[int]  # (N,) end sample (exclusive) of each window
    scores: torch.Tensor  # (N, C) probabilities


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
        from ..weights.checkpoint import load_model

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
        from ..errors import CheckpointError  # imported here: this method is the only user in this module

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

    def _score_windows(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """B windows (W_i,) at the model rate -> (B, C) probabilities. Windows of one length are featurised as one
        (B, W) batch; a clip shorter than the window among them makes it per-item fbanks, zero-padded in the log-mel
        domain to the model's frames (as the reference pads)."""
        same = all(w.shape[0] == windows[0].shape[0] for w in windows)
        if getattr(self.model, "takes_waveforms", False):  # an ONNX graph with the fbank inside (export.py)
            parts = [torch.stack(list(windows))] if same else [w.unsqueeze(0) for w in windows]  # (B, W) | B x (1, W_i)
            return torch.cat([self.scores(p) for p in parts])
        batch = self.features(torch.stack(list(windows)) if same else list(windows))  # (B, W) | B x (W_i,) -> (B, T, F)
        return self.scores(batch)

    def _input_windows(self, item: Any, name: str, window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
        """The windows of one input (a path, decoded as the windows need it, or a waveform), checked: an input that
        cannot be read, has the wrong shape or is shorter than one analysis frame raises AudioInputError naming it."""
        rate = self.sample_rate
        if isinstance(item, (str, os.PathLike)):
            chunks: Iterable[np.ndarray] = stream_audio(item, sample_rate=rate)
        elif isinstance(item, torch.Tensor):
            if item.dim() != 1:
                raise AudioInputError(f"{name}: expected a 1-D (N,) mono waveform at {rate} Hz, got shape "
                                      f"{tuple(item.shape)}")
            waveform = item.detach().float().cpu()
            chunks = (waveform[i:i + BLOCK_FRAMES].numpy() for i in range(0, waveform.shape[0], BLOCK_FRAMES))
        else:
            raise AudioInputError(f"{name}: expected a path or a waveform tensor, got {type(item).__name__}")
        frontend = self.model.frontend
        cut = 0
        for start, samples in stream_windows(chunks, window, hop):
            if samples.shape[0] < frontend.window_samples:  # only a whole clip can be shorter than a window
                raise AudioInputError(f"{name}: audio is {samples.shape[0] / rate * 1000:.1f} ms long, shorter than "
                                      f"one {frontend.frame_length_ms:g} ms analysis window ({frontend.window_samples}"
                                      f" samples at {rate} Hz); expected a longer clip, pad it with silence")
            cut += 1
            yield start, samples
        if not cut:
            raise AudioInputError(f"{name}: audio has 0 samples; expected at least one "
                                  f"{frontend.frame_length_ms:g} ms analysis window of audio")

    def stream_scores(self, inputs: Sequence[AudioSource], window: int, hop: int, batch_size: int = 8, *,
                      names: Sequence[str] | None = None,
                      on_error: Callable[[int, AudioInputError], None] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Iterator[ScoredWindows]:
        """Score every window of every input; yields one ScoredWindows per input, in input order.

        The one implementation of windowed scoring, behind `tag` and `ast_audio.events.score_stream`. Files are
        decoded block by block (`stream_audio`) while their windows are cut (`stream_windows`, placing them as
        `window_starts` does) and waveforms are cut the same way, so memory is about `batch_size` windows plus one
        decoded block, never a whole file. Windows of consecutive inputs share batches, `batch_size` per forward pass.

        Args:
            inputs: paths (any rate and channel count libsndfile reads) or (N,) float waveforms at `sample_rate`.
            window, hop: window length and hop in samples (see `window_and_hop`).
            batch_size: windows per forward pass.
            names: one name per input for results and messages (default: the path, or "waveform_<i>").
            on_error: called as on_error(index, error) for an input that fails (unreadable, damaged, too short, bad
                shape; the error names it); its windows are dropped and the other inputs still scored. None: raise.
            progress: called as progress(index, samples_done) after each forward pass, for the input whose window
                ended the batch.
        """
        pending: list[tuple[ScoredWindows, int, np.ndarray]] = []  # (input, start, (W,) samples) awaiting a batch
        rows: dict[int, list[torch.Tensor]] = {}  # each input's (C,) window scores so far
        cut: list[ScoredWindows] = []  # inputs with every window cut, in order, whose last windows may be pending

        def flush() -> None:
            if not pending:
                return
            scores = self._score_windows([torch.from_numpy(w) for _, _, w in pending])  # (B, C)
            for (item, start, samples), row in zip(pending, scores, strict=True):
                item.starts.append(start)
                item.ends.append(start + samples.shape[0])
                rows[item.index].append(row)
            last, start, samples = pending[-1]
            pending.clear()
            if progress is not None:
                progress(last.index, start + samples.shape[0])

        def finished() -> Iterator[ScoredWindows]:  # after a flush nothing is pending: every cut input is done
            for item in cut:
                item.scores = torch.stack(rows.pop(item.index))  # N x (C,) -> (N, C)
                yield item
            cut.clear()

        for index, source in enumerate(inputs):
            default = str(source) if isinstance(source, (str, os.PathLike)) else f"waveform_{index}"
            item = ScoredWindows(index=index, name=str(names[index]) if names is not None else default,
                                 num_samples=0, starts=[], ends=[], scores=torch.empty(0))
            rows[index] = []
            windows = self._input_windows(source, item.name, window, hop)
            while True:
                try:
                    start, samples = next(windows)
                except StopIteration:
                    cut.append(item)
                    break
                except AudioInputError as exc:  # this input only: drop its windows, go on with the others
                    pending[:] = [p for p in pending if p[0] is not item]
                    del rows[index]
                    if on_error is None:
                        raise
                    on_error(index, exc)
                    break
                pending.append((item, start, samples))
                item.num_samples = start + samples.shape[0]  # the last window ends at the end of the input
                if len(pending) == batch_size:
                    flush()
                    yield from finished()
        flush()
        yield from finished()

    def tag(self, inputs: AudioSource | Sequence[AudioSource], top_k: int = 10, window_s: float | None = None,
            hop_s: float | None = None, aggregate: Literal["max", "mean"] = "max", batch_size: int = 8,
            names: Sequence[str] | None = None,
            on_error: Callable[[int, AudioInputError], None] | None = None) -> list[TagResult]:
        """Tag files or waveforms.

        Args:
            inputs: a path or (N,) waveform at `self.sample_rate`, or a list of them. Paths are decoded block by
                block with `stream_audio` (mono, resampled; memory does not grow with the file's length); a bad file
                raises `AudioInputError` naming it.
            top_k: labels kept per clip and per window (capped at the number of classes).
            window_s: sliding-window length in seconds; default the model's input length (`max_window_s`).
            hop_s: seconds between window starts, in (0, window_s]; default window_s / 2 (50% overlap).
            aggregate: clip score per class = "max" (an event anywhere counts) or "mean" over the windows.
            batch_size: windows per forward pass; windows of all inputs are batched together.
            names: display names for the inputs (default: the path, or "waveform_<i>").
            on_error: called as on_error(index, error) for an input that cannot be used, which is then left out of
                the results (default: raise).

        Returns:
            One TagResult per input (per good input with `on_error`), in order.
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
        rate = self.sample_rate
        results = []
        for scored in self.stream_scores(items, window, hop, batch_size, names=names, on_error=on_error):
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
