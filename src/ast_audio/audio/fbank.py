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

from ..config import SAMPLE_RATE, FrontendConfig
from ..errors import AudioInputError, ConfigError
from ..utils import count_non_finite

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
        raise ConfigError(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got {low_freq}, {high_freq}")
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


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Frames Kaldi makes with snip_edges=True: 1 + (N - window) // hop, 0 if the clip is shorter than a window."""
    window = int(sample_rate * frame_length_ms / 1000)
    hop = int(sample_rate * frame_shift_ms / 1000)
    return 0 if num_samples < window else 1 + (num_samples - window) // hop


@functools.lru_cache(maxsize=32)
def _constants(num_bins: int, fft_size: int, sample_rate: int, low_freq: float, high_freq: float, window: int,
               device: torch.device, dtype: torch.dtype, group: int = 16):
    """Per (settings, device, dtype): the Hann window and the mel filterbank as band-limited blocks.

    Each Kaldi mel filter weights only a few adjacent FFT bins (504 non-zeros in the 257 x 128 matrix), so the
    filterbank is applied as `num_bins / group` small matmuls, each over the bins its filters touch (8x fewer
    multiply-adds than the dense product). The rows are interleaved (re, im) so the power |X|^2 = re^2 + im^2 is
    summed inside the matmul: see `fbank`.

    Returns:
        hann: (window,) symmetric Hann window.
        blocks: tuple of (first interleaved row, last row + 1, first filter, (rows, filters) weights).
    """
    banks = mel_banks(num_bins, fft_size, sample_rate, low_freq, high_freq)  # (K, F) float64
    interleaved = banks.repeat_interleave(2, dim=0)  # (2K, F): rows 2k and 2k+1 weight re_k^2 and im_k^2
    blocks = []
    for first in range(0, num_bins, group):
        cols = interleaved[:, first:first + group]  # (2K, g)
        rows = cols.abs().sum(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue  # filters that catch no FFT bin stay at the log floor
        lo, hi = int(rows.min()), int(rows.max()) + 1
        blocks.append((lo, hi, first, cols[lo:hi].to(device=device, dtype=dtype).contiguous()))
    # Made in the target dtype as torchaudio makes it: a float64 window rounded to float32 differs by an ulp here
    # and there, which moves the quietest bins by ~1e-3 (see `fbank`).
    hann = torch.hann_window(window, periodic=False, dtype=dtype, device=device)
    return hann, tuple(blocks)


def fbank(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, preemphasis: float = 0.97,
          low_freq: float = 20.0, high_freq: float = 0.0, remove_clip_dc: bool = True,
          chunk_frames: int = 512) -> torch.Tensor:
    """Kaldi log-mel filterbank of a waveform in [-1, 1].

    Args:
        waveform: (N,) or (B, N) float samples in [-1, 1] (not int16-scaled).
        sample_rate: Hz. The AST checkpoints expect 16000.
        num_mel_bins: mel bins F (128 for AST).
        remove_clip_dc: subtract each clip's mean first, as the reference training loader does (Kaldi's per-frame
            DC removal makes this an identity up to float rounding).
        chunk_frames: frames processed per step (memory/cache trade-off only; results do not depend on it).

    Returns:
        (T, F) or (B, T, F) log-mel energies in the input's float dtype, T = 1 + (N - window) // hop
        (998 frames for 10 s at 16 kHz).

    Raises:
        AudioInputError: a non-float or non-finite waveform (checked after any cast, in the dtype computed in), a
            wrong shape, fewer samples than one window, or samples so large that the spectrum overflows.

    How it is fast (no float64, no per-op allocation of batch-sized temporaries): frames are a strided view of the
    signal; chunks of `chunk_frames` frames (512: the fastest of 128-1024 measured) go through DC removal,
    pre-emphasis and the window into a reused zero-padded (chunk, 512) buffer, one rfft per chunk gives the
    spectrum, which is squared in place and reduced to mel energies by band-limited matmuls (`_constants`),
    writing into the output, instead of a dense 257 x 128 product. Chunks keep the working set in cache: the
    whole-batch version streamed ~50 MB of fresh temporaries per batch of 8 and was slower per clip than single
    clips. Every clip is computed alone, so a batch gives exactly its clips' single results. The time-domain steps
    keep torchaudio's order of float32 operations on purpose: the quietest bins (the lowest mel filters, where
    pre-emphasis removes almost everything) carry float32 rounding of ~1e-3 in log energy, and computing them in
    another order would give another ~1e-3 of rounding instead of the same one.
    """
    if not isinstance(waveform, torch.Tensor):
        waveform = torch.as_tensor(waveform)
    if not waveform.is_floating_point():
        raise AudioInputError(f"expected a float waveform in [-1, 1], got dtype {waveform.dtype}; "
                              "scale integer samples first (ast_audio.audio.io.load_audio does)")
    if waveform.dim() not in (1, 2):
        raise AudioInputError(f"expected a waveform of shape (N,) or (B, N), got {tuple(waveform.shape)}")
    if waveform.requires_grad and torch.is_grad_enabled():
        raise AudioInputError("fbank writes into reused buffers and is not differentiable; pass waveform.detach() "
                              "(or call it under torch.no_grad())")
    # The settings' one set of checks (rate, bins, window and hop of at least a sample): ConfigError otherwise.
    settings = FrontendConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins, frame_length_ms=frame_length_ms,
                              frame_shift_ms=frame_shift_ms)
    squeeze = waveform.dim() == 1
    x = waveform.unsqueeze(0) if squeeze else waveform  # (B, N)
    window, hop = settings.window_samples, settings.hop_samples
    if x.shape[1] < window:
        raise AudioInputError(f"audio of {x.shape[1]} samples is shorter than one {frame_length_ms:g} ms window "
                              f"({window} samples at {sample_rate} Hz)")
    fft_size = 1 << (window - 1).bit_length()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    # Checked in the dtype computed in: a caller's float64 1e300 is finite, but its float32 cast is not.
    bad = count_non_finite(x)
    if bad:
        raise AudioInputError(f"waveform has {bad} NaN or infinite sample(s) (in {x.dtype}); expected finite samples "
                              "in [-1, 1]")
    hann, blocks = _constants(num_mel_bins, fft_size, sample_rate, float(low_freq), float(high_freq), window,
                              x.device, x.dtype)
    batch, frames = x.shape[0], 1 + (x.shape[1] - window) // hop

    out = x.new_empty(batch, frames, num_mel_bins)
    # Work in chunks of frames through buffers allocated once: a whole batch at once would stream ~50 MB of
    # temporaries through memory (and page faults) per call and was slower per clip than one clip at a time.
    chunk = min(frames, chunk_frames)
    centred = x.new_empty(chunk, window)
    buffer = x.new_zeros(chunk, fft_size)  # the windowed frame, then zeros up to the FFT size
    covered = sum(block[3].shape[1] for block in blocks)
    for b in range(batch):
        # The clip mean of each row alone: a (B, N) mean reduces in another order than an (N,) one, and one ulp of
        # difference moves the quietest bins by ~1e-4, so a batch would not give its clips' single results.
        clip_mean = x[b].mean() if remove_clip_dc else None
        for t0 in range(0, frames, chunk):
            n = min(chunk, frames - t0)
            segment = x[b, t0 * hop:(t0 + n - 1) * hop + window]  # the samples of frames t0 .. t0 + n - 1
            strided = segment.unfold(0, window, hop)  # (n, window) view: snip_edges framing without a copy
            c, framed = centred[:n], buffer[:n, :window]
            # Contiguous rows (the mean below then reduces as torchaudio's does, and faster), minus the clip mean:
            # sample by sample the same numbers as subtracting it from the whole clip first.
            if clip_mean is not None:
                torch.sub(strided, clip_mean, out=c)
            else:
                c.copy_(strided)
            c.sub_(c.mean(dim=1, keepdim=True))  # per-frame DC removal
            # Pre-emphasis y[i] = x[i] - a x[i-1], x[-1] := x[0], with torchaudio's rounding (product, difference).
            torch.mul(c[:, :-1], preemphasis, out=framed[:, 1:])
            torch.sub(c[:, 1:], framed[:, 1:], out=framed[:, 1:])
            framed.mul_(hann)  # column 0 is never written and stays 0: Kaldi's (1 - a) x[0] gets w[0] = 0 anyway
            spec = torch.fft.rfft(buffer[:n])  # (n, 512) -> (n, 257) complex (out= measured slower: a copy)
            squares = torch.view_as_real(spec).square_().view(n, -1)  # (n, 2 * 257): re^2, im^2, re^2, ...
            mel = out[b, t0:t0 + n]  # (n, F)
            if covered < num_mel_bins:
                mel.fill_(KALDI_EPSILON)  # filters that catch no FFT bin stay at the floor
            for lo, hi, first, weights in blocks:
                torch.matmul(squares[:, lo:hi], weights, out=mel[:, first:first + weights.shape[1]])
            mel.clamp_min_(KALDI_EPSILON).log_()
    if count_non_finite(out):
        # Finite samples can still overflow: the power spectrum of samples ~1e17 (float32) exceeds its range.
        raise AudioInputError(f"waveform peak {float(x.abs().max()):.3g} is too large: its power spectrum overflows "
                              f"{x.dtype}; expected samples in [-1, 1] (divide integer-scaled audio by its full scale)")
    return out[0] if squeeze else out


def frame_transform(sample_rate: int = SAMPLE_RATE, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
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
