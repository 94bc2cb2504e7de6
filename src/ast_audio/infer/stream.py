"""Windows over audio of any length, cut while it is decoded, and their scores.

Window placement for a clip of N samples, window W and hop H samples (N > W): starts 0, H, 2H, ... while
start + W < N, then one final window aligned to the end, [N - W, N). Every window is full length (no padding), the
last one reaches the end of the file, and the final hop may be shorter than H. A clip of at most W samples is one
window, zero-padded in the log-mel domain as the reference does. `window_starts` places the windows of a known
length, `window_count` counts them, `stream_windows` cuts the same windows from a stream whose length is unknown.

Files are never held whole: `stream_scores`, the one implementation of windowed scoring (behind `Tagger.tag`,
`Tagger.stream_scores` and `score_stream`), decodes them block by block (`ast_audio.audio.io.stream_audio`) and
cuts the windows as the samples arrive, so memory is bounded by one batch of windows, not by the file's length.
A `Timeline` holds the window scores of one recording.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio.io import BLOCK_FRAMES, as_waveform, is_waveform, require_sample_rate, stream_audio
from ..config import FrontendConfig
from ..errors import AudioInputError, ConfigError
from ..labels import top_labels

AudioSource = str | os.PathLike | torch.Tensor | np.ndarray  # a path, or a (N,) waveform with its sample_rate


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

def window_count(num_samples: int, window: int, hop: int) -> int:
    """`len(window_starts(num_samples, window, hop))` without building the list (which, for a one-sample hop over a
    long file, would itself be the work a server guards against)."""
    if num_samples <= window:
        return 1
    return -(-(num_samples - window) // hop) + 1  # ceil((N - W) / H) regular starts, plus the end-aligned window


def input_windows(item: Any, name: str, window: int, hop: int, frontend: FrontendConfig,
                  sample_rate: int | None = None,
                  on_chunk: Callable[[np.ndarray], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """The windows of one input (a path, decoded as the windows need it, or a (N,) waveform at `sample_rate` Hz,
    resampled to the front end's rate by `as_waveform`), checked: an input that cannot be read, has the wrong shape
    or is shorter than one analysis frame raises AudioInputError naming it. `on_chunk` sees every (n,) block of
    samples in order as it is cut into windows (the one decoding of a file can feed a second measurement, e.g.
    `ast_audio.infer.events.EnergyMeter`)."""
    rate = frontend.sample_rate
    if isinstance(item, (str, os.PathLike)):
        chunks: Iterable[np.ndarray] = stream_audio(item, sample_rate=rate)
    elif is_waveform(item):
        waveform = as_waveform(item, sample_rate, rate, name)  # (N,) at sample_rate -> (M,) float32 at rate
        chunks = (waveform[i:i + BLOCK_FRAMES].numpy() for i in range(0, waveform.shape[0], BLOCK_FRAMES))
    else:
        raise AudioInputError(f"{name}: expected a path, or a waveform as a numpy array or torch tensor, got "
                              f"{type(item).__name__}")
    if on_chunk is not None:
        chunks = _observed(chunks, on_chunk)
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


def _observed(chunks: Iterable[np.ndarray], see: Callable[[np.ndarray], None]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        see(chunk)
        yield chunk


def stream_scores(score_windows: Callable[[Sequence[torch.Tensor]], torch.Tensor], frontend: FrontendConfig,
                  inputs: Sequence[AudioSource], window: int, hop: int, batch_size: int = 8, *,
                  names: Sequence[str] | None = None,
                  on_error: Callable[[int, AudioInputError], None] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  sample_rate: int | None = None,
                  on_chunk: Callable[[int, np.ndarray], None] | None = None) -> Iterator[ScoredWindows]:
    """Score every window of every input; yields one ScoredWindows per input, in input order.

    The one implementation of windowed scoring, behind `Tagger.tag`, `Tagger.stream_scores` and `score_stream`.
    Files are decoded block by block (`stream_audio`) while their windows are cut (`stream_windows`, placing them as
    `window_starts` does) and waveforms are cut the same way, so memory is about `batch_size` windows plus one
    decoded block, never a whole file. Windows of consecutive inputs share batches, `batch_size` per forward pass.

    Args:
        score_windows: B windows (W_i,) at the front end's rate -> (B, C) probabilities (`Tagger.score_windows`).
        frontend: the model's front end (its rate and analysis window decide what is too short).
        inputs: paths (any rate and channel count libsndfile reads) or (N,) float waveforms (numpy arrays or torch
            tensors) at `sample_rate`.
        window, hop: window length and hop in samples (`ast_audio.infer.windowing.Windowing`).
        batch_size: windows per forward pass.
        names: one name per input for results and messages (default: the path, or "waveform_<i>").
        on_error: called as on_error(index, error) for an input that fails (unreadable, damaged, too short, bad
            shape; the error names it); its windows are dropped and the other inputs still scored. None: raise.
        progress: called as progress(index, samples_done) after each forward pass, for the input whose window
            ended the batch.
        sample_rate: the rate of the waveforms among `inputs`, in Hz (required when there are any: ConfigError
            before anything is scored); they are resampled to the front end's rate. Paths carry their own rate.
        on_chunk: called as on_chunk(index, (n,) samples) for each decoded block of an input, in order.
    """
    if sample_rate is not None or any(is_waveform(source) for source in inputs):
        require_sample_rate(sample_rate)  # a call-level mistake: raised up front, never passed to on_error
    pending: list[tuple[ScoredWindows, int, np.ndarray]] = []  # (input, start, (W,) samples) awaiting a batch
    rows: dict[int, list[torch.Tensor]] = {}  # each input's (C,) window scores so far
    cut: list[ScoredWindows] = []  # inputs with every window cut, in order, whose last windows may be pending

    def flush() -> None:
        if not pending:
            return
        scores = score_windows([torch.from_numpy(w) for _, _, w in pending])  # (B, C)
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
        see = None if on_chunk is None else (lambda chunk, index=index: on_chunk(index, chunk))
        windows = input_windows(source, item.name, window, hop, frontend, sample_rate, see)
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


@dataclass(frozen=True)
class Timeline:
    """Window scores over a whole recording, or a frame model's frame scores.

    starts_s / ends_s: (N,) float64 window bounds in seconds; scores: (N, C) float32 probabilities (sigmoid for
    multi-label models, softmax otherwise); labels: the C class names; duration_s: the recording's length at the
    model rate; hop_s / window_s: the requested hop and window (the last window may start less than a hop after
    the one before, see `ast_audio.infer`). frame_s: None for window scores; for frame scores
    (`ast_audio.infer.pipeline`) the length of a frame column, and each row is one column of the gapless frame grid
    (`ast_audio.infer.frames`) while hop_s / window_s are those of the model's passes.
    """

    starts_s: torch.Tensor
    ends_s: torch.Tensor
    scores: torch.Tensor
    labels: tuple[str, ...]
    duration_s: float
    hop_s: float
    window_s: float
    frame_s: float | None = None

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
