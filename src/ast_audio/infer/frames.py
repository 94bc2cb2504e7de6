"""Frame scores of a long recording from a frame model, stitched on one gapless grid.

A frame model (`ASTConfig.frame_head`) gives, per model input, t_dim time columns of class logits; column j of an
input starting at 0 s spans `column_span(config, frontend, j)` = [j, j + 1) x the column hop (0.1 s for AST). Over a
file of N samples the grid has ceil(N / column hop) columns, the last one partial (it ends at the file's end).

Windows are model inputs placed on the grid: window w starts at column w * hop_columns (sample
w * hop_columns * column hop), so its columns are grid columns and its Kaldi frames are the file's own frames.

- hop = window (default, `overlap=False`): hop_columns = t_dim, each grid column and each sample is scored once;
- `overlap=True`: hop_columns = t_dim // 2 (50%), and each window keeps its centre part: the columns from
  q = (t_dim - hop_columns) // 2 on, hop_columns of them; the first window also keeps its start, the last its end.

Each grid column is owned by exactly one window (`frame_windows`), so the grid has no gap and no seam average. The
last window is the first one whose columns reach the file's end; it is cut at the file's end and padded as the
front end pads (zero log-mel frames to the model's input length; a tail shorter than one 25 ms analysis frame has
no frame of its own and is all padding), and its columns beyond the file's end are dropped. Scores are
probabilities by `ast_audio.model.scores.probabilities` (sigmoid for multi-label models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..audio.features import FeatureExtractor
from ..audio.io import load_audio
from ..config import column_hop_samples, column_span
from ..errors import AudioInputError, CheckpointError, ConfigError
from ..model.scores import probabilities


@dataclass(frozen=True)
class FrameWindow:
    """One model input on the grid: it starts at grid column `first` and owns grid columns [keep_start, keep_end)."""

    first: int
    keep_start: int
    keep_end: int


def frame_windows(num_columns: int, t_dim: int, hop_columns: int) -> list[FrameWindow]:
    """The windows that score a grid of `num_columns` columns with inputs of `t_dim` columns every `hop_columns`,
    each owning its centre part (see the module docstring); their owned ranges tile [0, num_columns) in order."""
    if num_columns < 1 or t_dim < 1 or not 1 <= hop_columns <= t_dim:
        raise ConfigError(f"expected num_columns >= 1, t_dim >= 1 and hop_columns in 1..t_dim, got {num_columns}, "
                          f"{t_dim}, {hop_columns}")
    margin = (t_dim - hop_columns) // 2  # columns a window leaves to its neighbours on each side (0 for hop = t_dim)
    windows: list[FrameWindow] = []
    first = 0
    while True:
        start = 0 if not windows else first + margin
        if first + t_dim >= num_columns:  # this window reaches the end of the grid: the last one
            windows.append(FrameWindow(first, start, num_columns))
            return windows
        windows.append(FrameWindow(first, start, first + margin + hop_columns))
        first += hop_columns


@dataclass
class FrameScores:
    """Frame scores of one recording on one gapless grid: row j spans `spans[j]` seconds."""

    scores: torch.Tensor  # (num_columns, C) probabilities
    spans: np.ndarray  # (num_columns, 2) start, end in seconds; end of row j = start of row j + 1; last end = duration
    labels: tuple[str, ...]
    num_samples: int
    sample_rate: int
    hop_s: float  # seconds per grid column (0.1 for AST; the last column may be shorter)
    windows: int  # model passes

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def grid_columns(num_samples: int, column_samples: int) -> int:
    """Columns of the gapless grid over `num_samples` samples: ceil(N / column hop), the last one partial."""
    return -(-num_samples // column_samples)


def score_frames(model, audio: torch.Tensor | str | os.PathLike, *, overlap: bool = False, batch_size: int = 8,
                 device: str | torch.device | None = None) -> FrameScores:
    """Frame scores of `audio` (a (N,) waveform at the model's rate, or a path, decoded whole) on one grid.

    `model`: a frame model (`AST` with a frame head, or an `OnnxModule` of one). One pass per window; see the
    module docstring for the windows (`overlap`: 50% hop keeping each window's centre, else hop = window).

    Raises:
        ConfigError: a clip model (no frame head).
        AudioInputError: audio that cannot be read, not 1-D, or shorter than one analysis frame.
        CheckpointError: non-finite logits (weights that overflow).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not getattr(model, "has_frame_head", False):
        raise ConfigError("frame scores need a frame model (one with a frame head); this is a clip model: use "
                          "sliding windows (Tagger, `ast-audio events`) or train one with `train --recipe sed`")
    frontend, config = model.frontend, model.config
    waveform = _waveform(audio, frontend.sample_rate, frontend.window_samples)
    column = column_hop_samples(config, frontend)
    num_columns = grid_columns(waveform.shape[0], column)
    t_dim = config.grid[1]
    windows = frame_windows(num_columns, t_dim, max(1, t_dim // 2) if overlap else t_dim)
    extractor = FeatureExtractor(frontend)
    rows: list[torch.Tensor] = []
    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        clips = [waveform[w.first * column: w.first * column + frontend.input_samples] for w in batch]
        frames = _frame_probabilities(model, _model_input(model, extractor, clips), device)  # (B, t_dim, C)
        rows += [frames[b, w.keep_start - w.first: w.keep_end - w.first] for b, w in enumerate(batch)]
    scores = torch.cat(rows)  # (num_columns, C)
    spans = np.array([column_span(config, frontend, j) for j in range(num_columns)])
    spans[-1, 1] = waveform.shape[0] / frontend.sample_rate  # the last column ends with the file
    return FrameScores(scores, spans, tuple(model.labels), waveform.shape[0], frontend.sample_rate,
                       hop_s=column_span(config, frontend, 1)[0], windows=len(windows))


def _waveform(audio: torch.Tensor | str | os.PathLike, rate: int, min_samples: int) -> torch.Tensor:
    if isinstance(audio, (str, os.PathLike)):
        audio = load_audio(audio, sample_rate=rate)
    if not isinstance(audio, torch.Tensor) or audio.dim() != 1:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise AudioInputError(f"expected a 1-D (N,) mono waveform at {rate} Hz or a path, got {shape}")
    if audio.shape[0] < min_samples:
        raise AudioInputError(f"audio is {audio.shape[0]} samples long, shorter than one analysis frame "
                              f"({min_samples} samples at {rate} Hz); expected a longer clip")
    return audio.detach().float().cpu()


def _model_input(model, extractor: FeatureExtractor,
                 clips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """B clips (W_i,) cut from the file -> the model's input: (B, T, F) features padded as the front end pads, or
    for an ONNX graph with the fbank inside the waveforms themselves: (B, W) when all are full length, else one
    (1, W_i) item each (the graph pads in the log-mel domain too)."""
    c = extractor.config
    same = all(clip.shape[0] == c.input_samples for clip in clips)
    if getattr(model, "takes_waveforms", False):
        if same:
            return torch.stack(clips)
        # The graph needs one analysis frame: a shorter tail gets zero samples up to one (a frame of silence where
        # the eager path has only padding; the tail is under 25 ms).
        return [torch.nn.functional.pad(clip, (0, max(0, c.window_samples - clip.shape[0])))[None] for clip in clips]
    if same:
        return extractor(torch.stack(clips))  # (B, W) -> (B, T, F) in one fbank call
    frames = [extractor.frames(clip) if clip.shape[0] >= c.window_samples else torch.zeros(0, c.num_mel_bins)
              for clip in clips]  # a tail shorter than one analysis frame has no frame: all padding
    return extractor.normalize(torch.stack([extractor.pad_or_crop(f) for f in frames]))  # (B, T, F)


def _frame_probabilities(model, inputs: torch.Tensor | list[torch.Tensor],
                         device: str | torch.device | None) -> torch.Tensor:
    """Model input -> (B, t_dim, C) frame probabilities (float32, CPU); a list is run one item at a time."""
    parts = inputs if isinstance(inputs, list) else [inputs]
    with torch.inference_mode():
        logits = torch.cat([model.forward_frames(p.to(device) if device is not None else p).float().cpu()
                            for p in parts])
    if not torch.isfinite(logits).all():
        raise CheckpointError("the model produced non-finite frame logits for finite input; the checkpoint is broken "
                              "(weights that overflow); try another checkpoint")
    return probabilities(logits, model.multi_label)


def score_frame_clips(model, extractor: FeatureExtractor, clips: list[torch.Tensor],
                      device: str | torch.device | None = None) -> torch.Tensor:
    """B clips (W_i,) at the model rate, each starting on the column grid and at most the model's input long ->
    (B, t_dim, C) frame probabilities in one pass, each clip padded as `score_frames` pads a file's last window
    (the same code: live streams, `ast_audio.infer.live`, score their windows with it)."""
    return _frame_probabilities(model, _model_input(model, extractor, clips), device)
