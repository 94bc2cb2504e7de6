"""Kaldi-compatible log-mel filterbank in plain, batched torch (no torchaudio).

Reproduces `torchaudio.compliance.kaldi.fbank` with the AST recipe's settings (spec §2.1):
htk_compat=True, use_energy=False, window_type='hanning' (a symmetric Hann window), dither=0,
frame_shift=10 ms, frame_length=25 ms, preemphasis 0.97, per-frame DC offset removal, power spectrum,
FFT size rounded up to a power of two (512), 128 Kaldi-mel bins from 20 Hz to Nyquist, log with a
float32-epsilon floor, snip_edges=True. The reference dataloader also subtracts each clip's mean first.
"""

from __future__ import annotations

import functools
import math

import torch

from ..errors import AudioInputError

# torchaudio's floor: torch.finfo(torch.float).eps, i.e. float32 epsilon whatever the dtype.
KALDI_EPSILON = 1.1920928955078125e-07


def _mel(freq: torch.Tensor | float):
    """Kaldi mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(num_bins: int, fft_size: int, sample_rate: int, low_freq: float = 20.0,
              high_freq: float = 0.0) -> torch.Tensor:
    """(fft_size // 2 + 1, num_bins) float64 triangular filters, triangular in the mel domain (Kaldi's MelBanks).

    `high_freq` <= 0 counts back from Nyquist. The Nyquist FFT bin gets a zero weight, as in Kaldi.
    """
    nyquist = sample_rate / 2
    if high_freq <= 0:
        high_freq += nyquist
    if not 0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got {low_freq}, {high_freq}")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)  # (num_bins, 1)
    left = mel_low + index * delta
    center = mel_low + (index + 1) * delta
    right = mel_low + (index + 2) * delta
    num_fft_bins = fft_size // 2
    freqs = torch.arange(num_fft_bins, dtype=torch.float64) * (sample_rate / fft_size)
    mel = _mel(freqs).unsqueeze(0)  # (1, num_fft_bins)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (num_bins, num_fft_bins)
    banks = torch.nn.functional.pad(banks, (0, 1))  # Nyquist bin -> weight 0: (num_bins, fft_size // 2 + 1)
    return banks.T.contiguous()


def num_frames(num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Frames Kaldi makes with snip_edges=True: 1 + (N - window) // hop, 0 if the clip is shorter than a window."""
    window = int(sample_rate * frame_length_ms / 1000)
    hop = int(sample_rate * frame_shift_ms / 1000)
    return 0 if num_samples < window else 1 + (num_samples - window) // hop


def fbank(waveform: torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, preemphasis: float = 0.97,
          low_freq: float = 20.0, high_freq: float = 0.0, remove_clip_dc: bool = True) -> torch.Tensor:
    """Kaldi log-mel filterbank of a waveform in [-1, 1].

    Args:
        waveform: (N,) or (B, N) float samples in [-1, 1] (not int16-scaled).
        sample_rate: Hz. The AST checkpoints expect 16000.
        num_mel_bins: mel bins F (128 for AST).
        remove_clip_dc: subtract each clip's mean first, as the reference training loader does.

    Returns:
        (T, F) or (B, T, F) log-mel energies in the input's float dtype, T = 1 + (N - window) // hop
        (998 frames for 10 s at 16 kHz).
    """
    if not isinstance(waveform, torch.Tensor):
        waveform = torch.as_tensor(waveform)
    if not waveform.is_floating_point():
        raise AudioInputError(f"expected a float waveform in [-1, 1], got dtype {waveform.dtype}; "
                              "scale integer samples first (ast_audio.audio.io.load_audio does)")
    if waveform.dim() not in (1, 2):
        raise AudioInputError(f"expected a waveform of shape (N,) or (B, N), got {tuple(waveform.shape)}")
    squeeze = waveform.dim() == 1
    x = waveform.unsqueeze(0) if squeeze else waveform  # (B, N)
    window = int(sample_rate * frame_length_ms / 1000)
    hop = int(sample_rate * frame_shift_ms / 1000)
    if x.shape[1] < window:
        raise AudioInputError(f"audio of {x.shape[1]} samples is shorter than one {frame_length_ms:g} ms window "
                              f"({window} samples at {sample_rate} Hz)")
    fft_size = 1 << (window - 1).bit_length()

    if remove_clip_dc:
        x = x - x.mean(dim=1, keepdim=True)
    frames = x.unfold(1, window, hop)  # (B, N) -> (B, T, window), snip_edges framing
    frames = frames - frames.mean(dim=2, keepdim=True)  # per-frame DC offset removal
    # Pre-emphasis y[i] = x[i] - 0.97 x[i-1], with x[-1] := x[0] (Kaldi's replicate padding).
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
    frames = frames - preemphasis * previous
    hann = torch.hann_window(window, periodic=False, dtype=frames.dtype, device=frames.device)
    spectrum = torch.fft.rfft(frames * hann, n=fft_size)  # (B, T, fft_size // 2 + 1), zero-padded to fft_size
    power = spectrum.real.square() + spectrum.imag.square()
    banks = mel_banks(num_mel_bins, fft_size, sample_rate, float(low_freq), float(high_freq))
    mel = power @ banks.to(device=power.device, dtype=power.dtype)  # (B, T, F)
    out = mel.clamp_min(KALDI_EPSILON).log()
    return out[0] if squeeze else out


def frame_transform(sample_rate: int = 16000, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
                    frame_shift_ms: float = 10.0, preemphasis: float = 0.97, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The Kaldi fbank's linear part as one matrix, for graphs without an FFT (ONNX export).

    From a raw frame f (window samples) to the real and imaginary parts of its zero-padded DFT, every step is
    linear: per-frame DC removal C = I - 11'/W, pre-emphasis P (y[i] = x[i] - a x[i-1], y[0] = (1 - a) x[0]),
    the symmetric Hann window, and the DFT. Only the K FFT bins that some mel filter weights are kept.

    Returns:
        transform: (2K, window) float64, rows [Re bins..., Im bins...]: spectrum = transform @ frame.
        banks: (K, num_mel_bins) float64 mel weights of the kept bins: mel energies = |spectrum|^2 @ banks.
    """
    window = int(sample_rate * frame_length_ms / 1000)
    fft_size = 1 << (window - 1).bit_length()
    all_banks = mel_banks(num_mel_bins, fft_size, sample_rate, float(low_freq), float(high_freq))
    used = (all_banks > 0).any(dim=1).nonzero().squeeze(1)  # FFT bins with some weight, (K,)
    centre = torch.eye(window, dtype=torch.float64) - 1.0 / window  # DC removal
    emphasis = torch.eye(window, dtype=torch.float64) - preemphasis * torch.diag(torch.ones(window - 1,
                                                                                  dtype=torch.float64), -1)
    emphasis[0, 0] = 1.0 - preemphasis  # x[-1] := x[0]
    hann = torch.hann_window(window, periodic=False, dtype=torch.float64)
    n = torch.arange(window, dtype=torch.float64)
    angle = 2 * math.pi * used.double().unsqueeze(1) * n / fft_size  # (K, window)
    dft = torch.cat([torch.cos(angle), -torch.sin(angle)])  # (2K, window)
    transform = dft @ torch.diag(hann) @ emphasis @ centre  # (2K, window)
    return transform, all_banks[used].contiguous()
