"""Waveforms -> the AST's input: Kaldi log-mel frames padded or cropped to a fixed length, then normalised.

The recipe (spec §2.1, `src/dataloader.py`): Kaldi fbank at `sample_rate` with `num_mel_bins` bins; zero-pad at the
end *in the log-mel domain* (value 0, which is ~+0.47 after AudioSet normalisation) or keep the first
`target_length` frames; then x <- (x - mean) / (2 * std), so that inputs have roughly mean 0 and std 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import FrontendConfig
from ..errors import AudioInputError
from .fbank import fbank

WaveformInput = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]


def _as_waveforms(waveforms: WaveformInput) -> list[torch.Tensor] | torch.Tensor:
    """Normalise the accepted inputs to a (B, N) float tensor or a list of (N_i,) float tensors."""
    if isinstance(waveforms, np.ndarray):
        waveforms = torch.from_numpy(waveforms)
    if isinstance(waveforms, torch.Tensor):
        if waveforms.dim() == 1:
            waveforms = waveforms.unsqueeze(0)  # (N,) -> (1, N)
        if waveforms.dim() != 2:
            raise AudioInputError(f"expected a waveform (N,), a batch (B, N) or a list of (N,) waveforms, got shape "
                                  f"{tuple(waveforms.shape)}; downmix multi-channel audio first (load_audio does)")
        return waveforms
    if isinstance(waveforms, (str, bytes)) or not isinstance(waveforms, Sequence):
        raise AudioInputError(f"expected waveform tensors, got {type(waveforms).__name__}; "
                              "decode files with ast_audio.audio.io.load_audio first")
    if len(waveforms) == 0:
        raise AudioInputError("expected at least one waveform, got an empty list")
    items = []
    for i, w in enumerate(waveforms):
        w = torch.from_numpy(w) if isinstance(w, np.ndarray) else w
        if not isinstance(w, torch.Tensor) or w.dim() != 1:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise AudioInputError(f"waveform {i}: expected a 1-D (N,) mono tensor, got {shape}")
        items.append(w)
    return items


class FeatureExtractor:
    """Waveform(s) at `config.sample_rate` -> (B, target_length, num_mel_bins) normalised float32 model input.

    Stateless apart from its `FrontendConfig`; results for a batch equal the per-item results.

    Args:
        config: sample rate, mel bins, target length (frames) and normalisation statistics.
        remove_clip_dc: subtract each waveform's mean before the fbank, as the reference *training* loader does.
            Its inference scripts and transformers' ASTFeatureExtractor skip this; the difference is rounding only,
            because Kaldi also removes each 25 ms frame's DC offset.
    """

    def __init__(self, config: FrontendConfig, remove_clip_dc: bool = True) -> None:
        self.config = config
        self.remove_clip_dc = remove_clip_dc

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.config!r}, remove_clip_dc={self.remove_clip_dc})"

    def _check_rate(self, sample_rate: int | None) -> None:
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise AudioInputError(f"waveform is at {sample_rate} Hz but this front end expects "
                                  f"{self.config.sample_rate} Hz; resample it (load_audio(path, sample_rate="
                                  f"{self.config.sample_rate}) does)")

    def _fbank(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) or (B, N) -> (T, F) or (B, T, F) unnormalised log-mel."""
        if not x.is_floating_point():
            raise AudioInputError(f"expected float samples in [-1, 1], got dtype {x.dtype}; scale integer audio "
                                  "first (load_audio does)")
        c = self.config
        # fbank checks the samples for NaN/inf after this float32 cast (float64 1e300 becomes inf here).
        return fbank(x.float(), sample_rate=c.sample_rate, num_mel_bins=c.num_mel_bins,
                     frame_length_ms=c.frame_length_ms, frame_shift_ms=c.frame_shift_ms,
                     remove_clip_dc=self.remove_clip_dc)

    def frames(self, waveform: torch.Tensor | np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        """(N,) waveform -> (T, F) unnormalised log-mel frames, T = 1 + (N - window) // hop (no pad/crop)."""
        self._check_rate(sample_rate)
        x = torch.from_numpy(waveform) if isinstance(waveform, np.ndarray) else waveform
        if not isinstance(x, torch.Tensor) or x.dim() != 1:
            raise AudioInputError(f"expected a 1-D (N,) waveform, got {getattr(x, 'shape', type(x).__name__)}")
        return self._fbank(x)

    def pad_or_crop(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., T, F) -> (..., target_length, F): zero-pad at the end (log-mel value 0) or keep the first frames."""
        target = self.config.target_length
        missing = target - frames.shape[-2]
        if missing > 0:
            return torch.nn.functional.pad(frames, (0, 0, 0, missing), value=0.0)  # pad the T axis at the end
        return frames[..., :target, :]

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """(x - mean) / (2 * std): the reference's choice of 2 std gives inputs of std ~0.5 (spec §2.1)."""
        return (frames - self.config.mean) / (2 * self.config.std)

    def __call__(self, waveforms: WaveformInput, sample_rate: int | None = None) -> torch.Tensor:
        """Waveform(s) -> (B, target_length, num_mel_bins) float32 model input.

        Args:
            waveforms: one (N,) waveform, a (B, N) batch, or a list of (N_i,) waveforms of any lengths, float
                samples in [-1, 1] at `config.sample_rate`.
            sample_rate: the waveforms' rate in Hz, if known; a mismatch raises instead of giving wrong features.
        """
        self._check_rate(sample_rate)
        items = _as_waveforms(waveforms)
        if isinstance(items, torch.Tensor):
            feats = self.pad_or_crop(self._fbank(items))  # (B, N) -> (B, T, F) -> (B, target_length, F)
        else:
            feats = torch.stack([self.pad_or_crop(self._fbank(w)) for w in items])  # B x (T_i, F) -> (B, T, F)
        return self.normalize(feats)
