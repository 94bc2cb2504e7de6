"""What an audio input is before libsndfile decodes it, and one-line errors when it cannot be.

`probe_file` / `probe_bytes` check a path (exists, a regular file, readable, not empty) and sniff the container from
its first bytes; `decode_error` turns a libsndfile failure into a message that says what the input is (a truncated
file of a named format, bytes that do not match the extension, a format libsndfile does not read).
`native_stderr_silenced` keeps the C decoders' own messages (libmpg123 prints to fd 2) off the user's terminal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AudioInputError
from ..utils import one_line

CONVERT_HINT = "convert it to wav/flac (e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)"


@dataclass(frozen=True)
class Probe:
    """What the first bytes of an input say, before libsndfile sees it.

    format: the container the magic bytes announce ("WAV", "MP3", ...), else None.
    named: the format the file name's extension suggests, for inputs whose bytes announce none.
    exact_length: the header's frame count is exact, so decoding fewer samples means the file is truncated (false for
        an MP3 without a Xing/Info/VBRI tag, whose length libmpg123 estimates from the bit rate).
    data_bytes: for a WAV, (bytes of audio its data chunk declares, bytes present after the chunk header); None for
        other formats and for a length a streaming writer left open (0 or 0xFFFFFFFF). libsndfile reads what is
        present and reports that shorter length as the file's, so this is how a cut WAV is told apart.
    """

    format: str | None
    named: str | None = None
    exact_length: bool = True
    data_bytes: tuple[int, int] | None = None

    @property
    def truncated(self) -> bool:
        """A WAV whose data chunk declares more bytes than the file holds (cut by a copy or a download)."""
        return self.data_bytes is not None and self.data_bytes[0] > self.data_bytes[1] > 0

    @property
    def mpeg(self) -> bool:
        """libmpg123 will decode it (and may print to fd 2): the bytes or the name say MP3."""
        return "MP3" in (self.format, self.named)


_MAGIC = ((b"RIFF", "WAV"), (b"RIFX", "WAV"), (b"RF64", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"ID3", "MP3"),
          (b"FORM", "AIFF"), (b"caff", "CAF"), (b".snd", "AU"))
_EXTENSIONS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3",
               ".aif": "AIFF", ".aiff": "AIFF", ".caf": "CAF", ".au": "AU"}
_HEAD_BYTES = 256
_MAX_WAV_CHUNKS = 64  # chunks (fmt, LIST, fact, bext, ...) looked through for "data"
_OPEN_LENGTHS = (0, 0xFFFFFFFF)  # what writers to a pipe put in a data chunk's size: "until the end of the file"


def _wav_data_bytes(read_at: Callable[[int, int], bytes], size: int) -> tuple[int, int] | None:
    """(bytes the "data" chunk of a RIFF/RIFX WAVE declares, bytes present after its header), or None."""
    head = read_at(0, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None  # RF64 keeps its sizes in a ds64 chunk: not checked here
    order = "<" if head[:4] == b"RIFF" else ">"
    offset = 12
    for _ in range(_MAX_WAV_CHUNKS):
        header = read_at(offset, 8)
        if len(header) < 8:
            return None
        (declared,) = struct.unpack(order + "I", header[4:])
        if header[:4] == b"data":
            return None if declared in _OPEN_LENGTHS else (declared, max(0, size - offset - 8))
        offset += 8 + declared + (declared & 1)  # chunks are padded to an even length
    return None


def probe(read_at: Callable[[int, int], bytes], name: str, size: int | None = None) -> Probe:
    """Sniff the container from the magic bytes; for MPEG audio, look past an ID3v2 tag for a length tag; for a WAV
    of `size` bytes, compare its data chunk's declared length with what is present."""
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
    data_bytes = _wav_data_bytes(read_at, size) if fmt == "WAV" and size is not None else None
    return Probe(format=fmt, named=_EXTENSIONS.get(Path(name).suffix.lower()), exact_length=exact,
                 data_bytes=data_bytes)


def probe_bytes(data: bytes, name: str) -> Probe:
    return probe(lambda offset, size: data[offset:offset + size], name, len(data))


def _not_a_file(path: Path, what: str, todo: str) -> AudioInputError:
    return AudioInputError(f"{path}: {what}; expected a readable audio file, {todo}")


def probe_file(path: Path) -> Probe:
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

            found = probe(read_at, str(path), st.st_size)
    except PermissionError:
        raise _not_a_file(path, f"permission denied (mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid})",
                          f"make it readable (`chmod a+r {path}`) or run as a user that may read it") from None
    except OSError as exc:
        raise _not_a_file(path, f"cannot read it ({os.strerror(exc.errno) if exc.errno else exc})",
                          "check the file and the disk") from None
    if st.st_size == 0:
        raise AudioInputError(f"{path}: file is empty (0 bytes); expected encoded audio, re-create or skip the file")
    return found


# libsndfile messages that are wrong for a path `probe_file` has already checked (it exists, is a regular file and
# may be read): it says so for any MP3 stream libmpg123 cannot start decoding.
_MISLEADING = ("does not exist or is not a regular file", "System error")


def decode_error(name: str, exc: Exception, probe: Probe) -> AudioInputError:
    """One line saying what an input libsndfile could not decode is: a truncated/corrupt file of a known format,
    a file whose bytes do not match its extension, or a format libsndfile does not read."""
    reason = one_line(getattr(exc, "error_string", None) or str(exc))
    detail = "" if any(m in reason for m in _MISLEADING) else f" (libsndfile: {reason})"
    if probe.format is not None:
        return AudioInputError(f"{name}: cannot decode audio: truncated or corrupt {probe.format} file{detail}; "
                               "re-create or re-download it")
    if probe.named is not None:
        return AudioInputError(f"{name}: cannot decode audio: the name says {probe.named} but its first bytes are no "
                               f"{probe.named} header{detail}; re-create or re-download it, or {CONVERT_HINT}")
    return AudioInputError(f"{name}: cannot decode audio: not an audio format libsndfile reads{detail}; expected "
                           f"wav, flac, ogg, mp3, aiff, ...; {CONVERT_HINT}")


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
def native_stderr_silenced(active: bool = True) -> Iterator[None]:
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
