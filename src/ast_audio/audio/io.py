"""Decode audio files or bytes into the model's waveform: float32, mono, [-1, 1], at the requested rate.

This is the only module that decodes audio (soundfile / libsndfile, which reads wav, flac, ogg vorbis/opus, mp3,
aiff, ...) and resamples it (soxr): whole files (`load_audio`), bytes in memory (`decode_bytes`), files streamed block
by block (`stream_audio`) or one stretch of a file (`read_window`). `as_waveform` brings a waveform held in memory (a
numpy array or torch tensor, at a rate the caller names) to the same form, for every API that takes one. What an
input is, and why it cannot be decoded, is `ast_audio.audio.probe`.

Differences from the reference loader (spec §2.1), both deliberate:
- multi-channel files are *downmixed* by averaging the channels; the reference (`torchaudio.load` followed by
  Kaldi fbank with channel=-1) uses the first channel only;
- any sample rate is resampled to `sample_rate` with soxr; the reference does no resampling and silently
  computes features at the file's rate.

Every failure raises `AudioInputError` with a one-line message that starts with the file name and says what the
input is: a missing file, a broken symlink or a symlink loop, a folder, something other than a regular file, a file
that may not be read, an empty file, a truncated or corrupt file of a named format, or a format libsndfile does not
read. What the C decoders print on their own (libmpg123 warns about damaged MP3 streams on file descriptor 2) is
silenced; the one-line error says it instead. A WAV cut short of the length its header declares (which libsndfile
reads as a shorter file) is used with a one-line `TruncatedAudioWarning`, an error where that warning is turned into
one (`--strict`). File names are passed to libsndfile as the bytes the OS knows them by, so names that are not
valid UTF-8 open as any other.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from ..config import SAMPLE_RATE
from ..errors import AudioInputError, ConfigError, TruncatedAudioWarning
from .probe import Probe, decode_error, native_stderr_silenced, probe_bytes, probe_file

# The shortest clip that gives one fbank frame: the 25 ms analysis window (400 samples at 16 kHz).
MIN_DURATION_S = 0.025
# soxr "High Quality": 20-bit precision, passband to 0.91 of Nyquist; "VHQ" would cost ~2x for no audible gain.
RESAMPLE_QUALITY = "HQ"
# Float files whose peak exceeds this were almost certainly written int-scaled (e.g. 32767 for full scale).
MAX_FLOAT_PEAK = 2.0

# Samples decoded per soundfile read when streaming (`stream_audio`): 1.4 s at 48 kHz, small next to a batch of windows.
BLOCK_FRAMES = 65536
# A decode may come up short of the header's frame count by one MPEG frame (1152 samples) or 1% (libmpg123's own
# tolerance for a Xing length tag) before the file counts as truncated.
SHORTFALL_SLACK_FRAMES = 1152
SHORTFALL_SLACK_FRACTION = 0.01

@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding the samples."""

    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    format: str  # e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "VORBIS"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0

def _check_complete(name: str, probe: Probe, info: AudioInfo, decoded: int) -> None:
    """Raise if fewer frames decoded than the header declares (libmpg123 decodes a cut MP3 up to the cut)."""
    slack = max(SHORTFALL_SLACK_FRAMES, int(SHORTFALL_SLACK_FRACTION * info.frames))
    if probe.exact_length and info.frames - decoded > slack:
        rate = max(info.sample_rate, 1)
        raise AudioInputError(f"{name}: truncated or corrupt {probe.format or info.format} file: its header declares "
                              f"{info.frames / rate:.2f} s of audio but only {decoded / rate:.2f} s decode; "
                              "re-create or re-download it")


# ----------------------------------------------------------------------------------------------------------------------
# Decoding


def _info_from(source: Any, name: str, probe: Probe) -> AudioInfo:
    """The header of `source` (a path as bytes, or a BytesIO); a WAV cut short of its declared length warns here,
    on every way in (files, uploads, streams, headers alone), see `_warn_truncated`."""
    try:
        with native_stderr_silenced(probe.mpeg):
            info = sf.info(source)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise decode_error(name, exc, probe) from None
    result = AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames),
                       format=str(info.format), subtype=str(info.subtype))
    if probe.truncated:
        _warn_truncated(name, probe, result)
    return result


def _warn_truncated(name: str, probe: Probe, info: AudioInfo) -> None:
    """One TruncatedAudioWarning line for a WAV holding less data than its header declares. libsndfile reports only
    the part present (its frame count says nothing is missing), so without this a cut file is silently used as a
    shorter one. Turned into an error (`--strict`), it refuses the file."""
    declared, present = probe.data_bytes or (0, 1)
    have_s = info.duration_s
    warnings.warn(TruncatedAudioWarning(
        f"{name}: truncated WAV file: its header declares {have_s * declared / present:.2f} s of audio but only "
        f"{have_s:.2f} s is present; re-create or re-download it (the part present is used; --strict refuses such "
        "files)"), stacklevel=2)  # one place for every caller: a file read twice (header, then samples) warns once


def _os_path(path: Path) -> bytes:
    """`path` as the bytes the OS knows it by, for libsndfile: a name that is not valid UTF-8 reaches Python as
    surrogate escapes, which soundfile's strict encoding of a str would refuse (UnicodeEncodeError, which looked
    like a corrupt file)."""
    return os.fsencode(path)


def load_audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header (rate in Hz, channels, frames, format) without decoding its samples."""
    path = Path(path)
    return _info_from(_os_path(path), str(path), probe_file(path))


def bytes_info(data: bytes, name: str = "<bytes>") -> AudioInfo:
    """`load_audio_info` for encoded audio held in memory (e.g. an upload): the header only, nothing decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise AudioInputError(f"{name}: no data; expected encoded audio bytes")
    data = bytes(data)
    return _info_from(io.BytesIO(data), name, probe_bytes(data, name))


def _check_duration(name: str, frames: int, rate: int, max_duration_s: float | None) -> None:
    if max_duration_s is not None and rate > 0 and frames / rate > max_duration_s:
        raise AudioInputError(f"{name}: audio is {frames / rate:.2f} s long, longer than the {max_duration_s:g} s "
                              "allowed (max_duration_s); cut the file or raise the limit")


def resample(waveform: torch.Tensor, orig_rate: int, target_rate: int) -> torch.Tensor:
    """Resample a (N,) float waveform from `orig_rate` to `target_rate` Hz with soxr (quality HQ).

    The output has round(N * target_rate / orig_rate) samples; the identity when the rates are equal.
    """
    if orig_rate == target_rate:
        return waveform
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioInputError(f"sample rates must be positive, got {orig_rate} Hz -> {target_rate} Hz")
    data = soxr.resample(waveform.detach().cpu().numpy().astype(np.float32), orig_rate, target_rate,
                         quality=RESAMPLE_QUALITY)
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def require_sample_rate(sample_rate: Any, name: str = "waveform") -> int:
    """The rate of an in-memory waveform, checked: None (not given) or anything but a positive integer raises a
    one-line ConfigError saying to pass `sample_rate=` (a file carries its rate; an array does not)."""
    if sample_rate is None:
        raise ConfigError(f"{name}: an in-memory waveform needs its rate: pass sample_rate=<Hz> (e.g. "
                          "sample_rate=44100); it is resampled to the model's rate (a file path needs none)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"{name}: sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def is_waveform(item: Any) -> bool:
    """Whether `item` is an in-memory waveform (a numpy array or a torch tensor) rather than a path."""
    return isinstance(item, (np.ndarray, torch.Tensor))


def as_waveform(samples: Any, sample_rate: Any, target_rate: int, name: str = "waveform") -> torch.Tensor:
    """An in-memory waveform at `sample_rate` Hz -> the (M,) float32 CPU tensor at `target_rate` the models take.

    The one coercion behind every API that takes a waveform (`Tagger.tag`, `score_stream`, `Embedder.embed`,
    `explain`): `samples` is a 1-D (N,) float numpy array or torch tensor in [-1, 1] (mono: average the channels
    first), checked as decoded files are (finite, no int-scaled peak above 2.0), then resampled with soxr HQ as
    `load_audio` resamples files, M = round(N * target_rate / sample_rate).

    Raises:
        ConfigError: `sample_rate` missing (None) or not a positive integer.
        AudioInputError: not an array or tensor, not 1-D, not float, NaN/inf or int-scaled samples.
    """
    rate = require_sample_rate(sample_rate, name)
    if not is_waveform(samples):
        raise AudioInputError(f"{name}: expected a path, or a waveform as a numpy array or torch tensor, got "
                              f"{type(samples).__name__}")
    if isinstance(samples, torch.Tensor):
        if not samples.is_floating_point():
            raise AudioInputError(f"{name}: expected float samples in [-1, 1], got dtype {samples.dtype}; scale "
                                  "integer samples first (x.float() / 32768 for int16)")
        data = samples.detach().to("cpu", torch.float32).numpy()
    else:
        if not np.issubdtype(samples.dtype, np.floating):
            raise AudioInputError(f"{name}: expected float samples in [-1, 1], got dtype {samples.dtype}; scale "
                                  "integer samples first (x.astype(np.float32) / 32768 for int16)")
        data = samples
    if data.ndim != 1:
        raise AudioInputError(f"{name}: expected a 1-D (N,) mono waveform, got shape {tuple(data.shape)}; average "
                              "the channels first (x.mean(axis=0) for (channels, N), x.mean(axis=1) for "
                              "(N, channels))")
    mono = torch.from_numpy(checked_mono(name, data[:, None], f"{data.dtype} waveform"))  # (N, 1) -> (N,) float32
    return resample(mono, rate, target_rate) if mono.shape[0] else mono


def checked_mono(name: str, data: np.ndarray, subtype: str) -> np.ndarray:
    """(N, C) decoded float32 samples (a whole file or one block of it) -> contiguous (N,) float32 channel mean,
    after checking that every sample is finite and within [-1, 1] (one-line AudioInputError naming `name`)."""
    with np.errstate(over="ignore"):  # checked after the cast: float64 1e300 becomes inf in float32
        data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioInputError(f"{name}: {bad} sample(s) are NaN or infinite; expected finite samples in [-1, 1], "
                              "repair or re-export the file")
    if data.size:
        peak = float(np.abs(data).max())
        if peak > MAX_FLOAT_PEAK:
            raise AudioInputError(f"{name}: peak sample is {peak:g} ({subtype}); expected samples in [-1, 1]; "
                                  "the file looks int-scaled, divide it by 32768 (or its full scale) and re-save")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]  # (N, C) -> (N,)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _finish(name: str, data: np.ndarray, rate: int, sample_rate: int, max_duration_s: float | None,
            subtype: str) -> torch.Tensor:
    """(N, C) decoded float32 -> validated (N,) mono float32 tensor at `sample_rate`."""
    if data.shape[0] == 0:
        raise AudioInputError(f"{name}: audio has 0 samples; expected at least {MIN_DURATION_S * 1000:g} ms of audio")
    _check_duration(name, data.shape[0], rate, max_duration_s)  # header frames can be estimates (mp3)
    waveform = resample(torch.from_numpy(checked_mono(name, data, subtype)), rate, sample_rate)
    min_samples = int(sample_rate * MIN_DURATION_S)
    if waveform.shape[0] < min_samples:
        raise AudioInputError(f"{name}: audio is {waveform.shape[0] / sample_rate * 1000:.1f} ms long, shorter than "
                              f"one {MIN_DURATION_S * 1000:g} ms analysis window ({min_samples} samples at "
                              f"{sample_rate} Hz); expected a longer clip, pad it with silence")
    return waveform


def _check_rate(sample_rate: Any) -> None:
    if not (isinstance(sample_rate, int) and sample_rate > 0):
        raise AudioInputError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")


def _decode(source: Any, name: str, probe: Probe, sample_rate: int, max_duration_s: float | None) -> torch.Tensor:
    _check_rate(sample_rate)
    if max_duration_s is not None and not max_duration_s > 0:
        raise AudioInputError(f"max_duration_s must be positive or None, got {max_duration_s!r}")
    info = _info_from(source, name, probe)
    # Refuse huge inputs from the header, before decoding (and allocating) them.
    _check_duration(name, info.frames, info.sample_rate, max_duration_s)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        # float32 scales integer formats to [-1, 1) (PCM_16 by 1/32768, PCM_24 by 1/2^23, ...).
        with native_stderr_silenced(probe.mpeg):
            data, rate = sf.read(source, dtype="float32", always_2d=True)  # (N, C)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise decode_error(name, exc, probe) from None
    _check_complete(name, probe, info, data.shape[0])
    return _finish(name, data, int(rate), sample_rate, max_duration_s, info.subtype)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
               max_duration_s: float | None = None) -> torch.Tensor:
    """Decode an audio file into a mono float32 waveform at `sample_rate`.

    Integer formats are scaled to [-1, 1]; float formats are passed through (a peak above 2.0 is rejected as
    int-scaled). Channels are averaged (the reference keeps only the first channel, spec §2.1), then the
    waveform is resampled with soxr if the file's rate differs. Silence is valid input.

    Args:
        path: any file libsndfile decodes (wav, flac, ogg vorbis/opus, mp3, aiff, ...).
        sample_rate: target rate in Hz (16000 for every AST checkpoint).
        max_duration_s: reject longer files, checked from the header before decoding; None = no limit.

    Returns:
        (N,) float32 tensor, N = round(frames * sample_rate / file_rate).

    Raises:
        AudioInputError: missing file, broken symlink or symlink loop, directory, pipe or device, no read
            permission, empty file, truncated or corrupt file, unknown format, no samples, NaN/inf samples,
            int-scaled float samples, shorter than one 25 ms window, or longer than `max_duration_s`.
    """
    path = Path(path)
    probe = probe_file(path)
    return _decode(_os_path(path), str(path), probe, sample_rate, max_duration_s)


def decode_bytes(data: bytes, sample_rate: int = SAMPLE_RATE, max_duration_s: float | None = None,
                 name: str = "<bytes>") -> torch.Tensor:
    """`load_audio` for encoded audio held in memory (e.g. an upload); `name` prefixes error messages."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioInputError(f"{name}: expected encoded audio bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioInputError(f"{name}: no data (0 bytes); expected encoded audio")
    data = bytes(data)
    return _decode(io.BytesIO(data), name, probe_bytes(data, name), sample_rate, max_duration_s)


def stream_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode a file block by block into (n,) float32 mono chunks at `sample_rate`, never holding the whole file.

    The decoding of `load_audio` (channel mean, finite and peak checks, soxr HQ resampling, here with its streaming
    resampler) with memory bounded by `BLOCK_FRAMES` samples. Errors are the same one-line AudioInputErrors, raised
    when they are found (a damaged block mid-file, a file shorter than its header at the end); checking the total
    length (no samples, shorter than one frame) is left to the caller, who counts the samples.
    """
    _check_rate(sample_rate)
    path = Path(path)
    name = str(path)
    probe = probe_file(path)
    info = _info_from(_os_path(path), name, probe)
    resampler = None
    if info.sample_rate != sample_rate:
        resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    decoded = 0
    try:
        with native_stderr_silenced(probe.mpeg):
            f = sf.SoundFile(_os_path(path))
        with f:
            while True:
                with native_stderr_silenced(probe.mpeg):
                    data = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (n, channels)
                decoded += data.shape[0]
                last = data.shape[0] < BLOCK_FRAMES
                if last:
                    _check_complete(name, probe, info, decoded)
                mono = checked_mono(name, data, info.subtype)  # (n, C) -> (n,)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if mono.shape[0]:
                    yield mono
                if last:
                    return
    except (sf.SoundFileError, RuntimeError) as exc:
        raise decode_error(name, exc, probe) from None


def read_window(path: str | os.PathLike, sample_rate: int, start_s: float, num_samples: int) -> torch.Tensor:
    """Samples [start_s, start_s + num_samples / rate) of a file at `sample_rate`, decoded in blocks (the rest of the
    file is never held); (M,) float32 with M <= num_samples where the file ends first."""
    start = round(start_s * sample_rate)
    parts, received, kept = [], 0, 0
    for chunk in stream_audio(path, sample_rate):
        lo, hi = max(0, start - received), min(chunk.shape[0], start + num_samples - received)
        if hi > lo:
            parts.append(chunk[lo:hi])
            kept += hi - lo
        received += chunk.shape[0]
        if kept >= num_samples:
            break
    if not parts:
        raise ConfigError(f"{path}: start {start_s:g} s is past the end of the audio ({received / sample_rate:g} s)")
    return torch.from_numpy(np.concatenate(parts))
