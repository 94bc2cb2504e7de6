"""Decode audio files or bytes into the model's waveform: float32, mono, [-1, 1], at the requested rate.

This is the only module that imports a codec backend (soundfile / libsndfile, which reads wav, flac, ogg
vorbis/opus, mp3, aiff, ...) and a resampler (soxr).

Differences from the reference loader (spec §2.1), both deliberate:
- multi-channel files are *downmixed* by averaging the channels; the reference (`torchaudio.load` followed by
  Kaldi fbank with channel=-1) uses the first channel only;
- any sample rate is resampled to `sample_rate` with soxr; the reference does no resampling and silently
  computes features at the file's rate.

Every failure raises `AudioInputError` with a one-line message that starts with the file name and says what the
input is: a missing file, a broken symlink or a symlink loop, a folder, something other than a regular file, a file
that may not be read, an empty file, a truncated or corrupt file of a named format, or a format libsndfile does not
read. What the C decoders print on their own (libmpg123 warns about damaged MP3 streams on file descriptor 2) is
silenced; the one-line error says it instead.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from ..errors import AudioInputError
from ..utils import one_line

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

_CONVERT_HINT = "convert it to wav/flac (e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)"


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


# ----------------------------------------------------------------------------------------------------------------------
# What a path or a byte string is


@dataclass(frozen=True)
class _Probe:
    """What the first bytes of an input say, before libsndfile sees it.

    format: the container the magic bytes announce ("WAV", "MP3", ...), else None.
    named: the format the file name's extension suggests, for inputs whose bytes announce none.
    exact_length: the header's frame count is exact, so decoding fewer samples means the file is truncated (false for
        an MP3 without a Xing/Info/VBRI tag, whose length libmpg123 estimates from the bit rate).
    """

    format: str | None
    named: str | None = None
    exact_length: bool = True

    @property
    def mpeg(self) -> bool:
        """libmpg123 will decode it (and may print to fd 2): the bytes or the name say MP3."""
        return "MP3" in (self.format, self.named)


_MAGIC = ((b"RIFF", "WAV"), (b"RIFX", "WAV"), (b"RF64", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"ID3", "MP3"),
          (b"FORM", "AIFF"), (b"caff", "CAF"), (b".snd", "AU"))
_EXTENSIONS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3",
               ".aif": "AIFF", ".aiff": "AIFF", ".caf": "CAF", ".au": "AU"}
_HEAD_BYTES = 256


def _probe(read_at: Callable[[int, int], bytes], name: str) -> _Probe:
    """Sniff the container from the magic bytes; for MPEG audio, look past an ID3v2 tag for a length tag."""
    head = read_at(0, _HEAD_BYTES)
    fmt = next((f for magic, f in _MAGIC if head.startswith(magic)), None)
    audio = head
    if head.startswith(b"ID3") and len(head) >= 10:  # ID3v2: 10-byte header, then a syncsafe (7 bits a byte) size
        size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        audio = read_at(size + (10 if head[5] & 0x10 else 0), _HEAD_BYTES)  # flag 0x10: a 10-byte footer follows
    # MPEG audio frame sync: 11 set bits, then a version and a layer (layer bits 00 are reserved / ADTS AAC).
    mpeg = len(audio) >= 2 and audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0 and (audio[1] >> 1) & 0x3 != 0
    if fmt is None and mpeg:
        fmt = "MP3"
    exact = fmt != "MP3" or any(tag in audio[:_HEAD_BYTES] for tag in (b"Xing", b"Info", b"VBRI"))
    return _Probe(format=fmt, named=_EXTENSIONS.get(Path(name).suffix.lower()), exact_length=exact)


def _probe_bytes(data: bytes, name: str) -> _Probe:
    return _probe(lambda offset, size: data[offset:offset + size], name)


def _not_a_file(path: Path, what: str, todo: str) -> AudioInputError:
    return AudioInputError(f"{path}: {what}; expected a readable audio file, {todo}")


def _probe_file(path: Path) -> _Probe:
    """Check that `path` is a non-empty regular file this process may read, then sniff its first bytes.

    Each way of failing gets its own one-line AudioInputError: no such file, a broken symlink, a symlink loop, a
    parent that is not a folder, a folder, a pipe or device, no permission, an empty file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _not_a_file(path, f"broken symlink (it points to {os.readlink(path)}, which does not exist)",
                              "fix or remove the link") from None
        raise _not_a_file(path, "no such file", "check the path") from None
    except PermissionError:
        raise _not_a_file(path, "permission denied on a folder above it (it cannot be searched)",
                          "check the folders' permissions or run as a user that may read them") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_a_file(path, "symlink loop (too many levels of symbolic links)",
                              "fix or remove the links") from None
        if exc.errno == errno.ENOTDIR:
            raise _not_a_file(path, "no such file (a part of the path above it is a file, not a folder)",
                              "check the path") from None
        raise _not_a_file(path, f"cannot access it ({os.strerror(exc.errno) if exc.errno else exc})",
                          "check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioInputError(f"{path}: is a directory; expected an audio file (pass the files inside it)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise _not_a_file(path, f"not a regular file ({kind})", "save the audio to a file first")
    try:
        with open(path, "rb") as f:

            def read_at(offset: int, size: int) -> bytes:
                f.seek(offset)
                return f.read(size)

            probe = _probe(read_at, str(path))
    except PermissionError:
        raise _not_a_file(path, f"permission denied (mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid})",
                          f"make it readable (`chmod a+r {path}`) or run as a user that may read it") from None
    except OSError as exc:
        raise _not_a_file(path, f"cannot read it ({os.strerror(exc.errno) if exc.errno else exc})",
                          "check the file and the disk") from None
    if st.st_size == 0:
        raise AudioInputError(f"{path}: file is empty (0 bytes); expected encoded audio, re-create or skip the file")
    return probe


# libsndfile messages that are wrong for a path `_probe_file` has already checked (it exists, is a regular file and
# may be read): it says so for any MP3 stream libmpg123 cannot start decoding.
_MISLEADING = ("does not exist or is not a regular file", "System error")


def _decode_error(name: str, exc: Exception, probe: _Probe) -> AudioInputError:
    """One line saying what an input libsndfile could not decode is: a truncated/corrupt file of a known format,
    a file whose bytes do not match its extension, or a format libsndfile does not read."""
    reason = one_line(getattr(exc, "error_string", None) or str(exc))
    detail = "" if any(m in reason for m in _MISLEADING) else f" (libsndfile: {reason})"
    if probe.format is not None:
        return AudioInputError(f"{name}: cannot decode audio: truncated or corrupt {probe.format} file{detail}; "
                               "re-create or re-download it")
    if probe.named is not None:
        return AudioInputError(f"{name}: cannot decode audio: the name says {probe.named} but its first bytes are no "
                               f"{probe.named} header{detail}; re-create or re-download it, or {_CONVERT_HINT}")
    return AudioInputError(f"{name}: cannot decode audio: not an audio format libsndfile reads{detail}; expected "
                           f"wav, flac, ogg, mp3, aiff, ...; {_CONVERT_HINT}")


def _check_complete(name: str, probe: _Probe, info: AudioInfo, decoded: int) -> None:
    """Raise if fewer frames decoded than the header declares (libmpg123 decodes a cut MP3 up to the cut)."""
    slack = max(SHORTFALL_SLACK_FRAMES, int(SHORTFALL_SLACK_FRACTION * info.frames))
    if probe.exact_length and info.frames - decoded > slack:
        rate = max(info.sample_rate, 1)
        raise AudioInputError(f"{name}: truncated or corrupt {probe.format or info.format} file: its header declares "
                              f"{info.frames / rate:.2f} s of audio but only {decoded / rate:.2f} s decode; "
                              "re-create or re-download it")


# ----------------------------------------------------------------------------------------------------------------------
# Silencing the C decoders' own messages

_LIBMPG123_LINE = re.compile(rb"^(\[src/libmpg123/|(Note|Warning|Error): )")
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple[int, Any] | None = None  # (the real fd 2, the temporary file standing in for it)


def _flush_stderr() -> None:
    """Write out Python's buffered stderr before fd 2 changes, so its lines land where they were meant to."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


@contextlib.contextmanager
def _native_stderr_silenced(active: bool = True) -> Iterator[None]:
    """Point file descriptor 2 at a temporary file while libsndfile decodes, then drop libmpg123's lines from it.

    libmpg123 (inside libsndfile) prints warnings about damaged MP3 streams straight to fd 2, with no switch to turn
    them off from libsndfile's API; the one-line AudioInputError says what is wrong instead. fd 2 is shared by the
    whole process, so nested or concurrent users share one redirection (counted), and every other line written to
    stderr meanwhile (another thread's log) is written to the real stderr afterwards, not lost.
    """
    global _quiet_depth, _quiet_saved
    if not active:
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            try:
                _flush_stderr()
                saved = os.dup(2)
            except (OSError, ValueError):  # no fd 2 (a daemon with it closed): nothing to silence
                saved = None
            if saved is not None:
                sink = tempfile.TemporaryFile()
                _quiet_saved = (saved, sink)
                os.dup2(sink.fileno(), 2)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                saved, sink = _quiet_saved
                _quiet_saved = None
                _flush_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                kept = b"".join(line for line in sink.read().splitlines(keepends=True)
                                if not _LIBMPG123_LINE.match(line))
                sink.close()
                if kept:
                    os.write(2, kept)


# ----------------------------------------------------------------------------------------------------------------------
# Decoding


def _info_from(source: Any, name: str, probe: _Probe) -> AudioInfo:
    try:
        with _native_stderr_silenced(probe.mpeg):
            info = sf.info(source)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise _decode_error(name, exc, probe) from None
    return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames),
                     format=str(info.format), subtype=str(info.subtype))


def load_audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header (rate in Hz, channels, frames, format) without decoding its samples."""
    path = Path(path)
    return _info_from(str(path), str(path), _probe_file(path))


def bytes_info(data: bytes, name: str = "<bytes>") -> AudioInfo:
    """`load_audio_info` for encoded audio held in memory (e.g. an upload): the header only, nothing decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise AudioInputError(f"{name}: no data; expected encoded audio bytes")
    data = bytes(data)
    return _info_from(io.BytesIO(data), name, _probe_bytes(data, name))


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


def _decode(source: Any, name: str, probe: _Probe, sample_rate: int, max_duration_s: float | None) -> torch.Tensor:
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
        with _native_stderr_silenced(probe.mpeg):
            data, rate = sf.read(source, dtype="float32", always_2d=True)  # (N, C)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise _decode_error(name, exc, probe) from None
    _check_complete(name, probe, info, data.shape[0])
    return _finish(name, data, int(rate), sample_rate, max_duration_s, info.subtype)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, max_duration_s: float | None = None) -> torch.Tensor:
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
    probe = _probe_file(path)
    return _decode(str(path), str(path), probe, sample_rate, max_duration_s)


def decode_bytes(data: bytes, sample_rate: int = 16000, max_duration_s: float | None = None,
                 name: str = "<bytes>") -> torch.Tensor:
    """`load_audio` for encoded audio held in memory (e.g. an upload); `name` prefixes error messages."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioInputError(f"{name}: expected encoded audio bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioInputError(f"{name}: no data (0 bytes); expected encoded audio")
    data = bytes(data)
    return _decode(io.BytesIO(data), name, _probe_bytes(data, name), sample_rate, max_duration_s)


def stream_audio(path: str | os.PathLike, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """Decode a file block by block into (n,) float32 mono chunks at `sample_rate`, never holding the whole file.

    The decoding of `load_audio` (channel mean, finite and peak checks, soxr HQ resampling, here with its streaming
    resampler) with memory bounded by `BLOCK_FRAMES` samples. Errors are the same one-line AudioInputErrors, raised
    when they are found (a damaged block mid-file, a file shorter than its header at the end); checking the total
    length (no samples, shorter than one frame) is left to the caller, who counts the samples.
    """
    _check_rate(sample_rate)
    path = Path(path)
    name = str(path)
    probe = _probe_file(path)
    info = _info_from(name, name, probe)
    resampler = None
    if info.sample_rate != sample_rate:
        resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    decoded = 0
    try:
        with _native_stderr_silenced(probe.mpeg):
            f = sf.SoundFile(name)
        with f:
            while True:
                with _native_stderr_silenced(probe.mpeg):
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
        raise _decode_error(name, exc, probe) from None
