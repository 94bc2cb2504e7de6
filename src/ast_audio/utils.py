"""Small shared helpers: atomic file writes (with the umask's modes and a clear error on a full disk), one-line
messages, progress reports on stderr (`Progress`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OutputError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports this module and must start without it
    import torch

# Free space at or below this, measured right after a write failed, means the disk filled up: torch.save then
# reports only "[enforce fail at inline_container.cc] unexpected pos ..." (a RuntimeError with no errno).
FULL_DISK_FREE_BYTES = 1 << 20
_NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}
_NO_SPACE_WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def backup_path(path: str | os.PathLike) -> Path:
    """Where `atomic_path` keeps the previous version of a folder while it swaps in the new one: `.NAME.old`.

    A process killed between the two renames leaves the previous version there and none under `path`; readers
    that must not lose it (`--resume`) look here too.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def temp_paths(path: str | os.PathLike) -> list[Path]:
    """Unfinished temporary versions of `path` that killed writers left behind (`.NAME.*.tmp`)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


# Temporary names carry their writer: `.NAME.<pid>@<host>.<random>.tmp`, host the first 8 hex digits of the SHA-1 of
# the host name (short, and safe in a file name), so that a later writer can tell a killed writer's leftover from a
# live one's work in progress.
_HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\..+\.(\d+)@([0-9a-f]{8})\.[^.]+\.tmp$")
_swept: set[Path] = set()  # folders this process has already cleaned


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{_HOST_TAG}."


def _writer_gone(pid: int) -> bool:
    """Whether process `pid` of this machine has ended (another user's live process counts as running)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary outputs (`.NAME.<pid>@<host>.*.tmp`, files or folders) in `folder` whose writer, a process
    of this machine, is gone: what a kill in the middle of an atomic write leaves (as large as the output itself).
    Temporaries of live writers, of other machines sharing the folder, and unmarked ones (written by earlier
    versions) are left alone. Done once per folder and process, by the first atomic write into it (`atomic_path`),
    so that the next run to an output cleans up after a killed one. Returns what was deleted."""
    folder = Path(folder)
    if folder in _swept:
        return []
    _swept.add(folder)
    removed = []
    with contextlib.suppress(OSError):
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _TEMP_NAME.match(entry.name)
                if match and match.group(2) == _HOST_TAG and _writer_gone(int(match.group(1))):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only read by setting)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask_modes(path: Path, umask: int | None = None) -> None:
    """Give `path` (and, for a folder, everything in it) the modes a plain `open` / `mkdir` would: 0o666 & ~umask for
    files (0o777 if executable), 0o777 & ~umask for folders. mkstemp and safetensors create files 0o600, which a
    service user other than the one who wrote them cannot read."""
    umask = current_umask() if umask is None else umask
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        entries += [p for p in path.rglob("*") if not p.is_symlink()]
    for entry in entries:
        mode = entry.stat().st_mode
        full = 0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666
        os.chmod(entry, full & ~umask)


def state_nbytes(state: object) -> int:
    """Bytes of the tensors in a (nested) state dict / list: the size estimate of a checkpoint for `atomic_path`."""
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    nbytes = getattr(state, "nbytes", None)  # torch.Tensor and numpy arrays
    return int(nbytes) if isinstance(nbytes, int) else 0


def _tree_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.is_file() else 0


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _free_bytes(folder: Path) -> int | None:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free
    return None


def _write_failure(path: Path, exc: BaseException, written: int, size_hint: int | None) -> OutputError | None:
    """The one-line OutputError for a failed write to `path`, or None if `exc` is not about writing (re-raise it).

    A full disk (ENOSPC / EDQUOT, or libraries' words for them, or - for torch.save's errno-less RuntimeError -
    almost no free space left right after the failure) names the bytes needed and free; any other OSError names
    `path` and the system's reason.
    """
    folder = next((p for p in path.parents if p.exists()), Path("."))  # the deepest existing folder above path
    free = _free_bytes(folder)
    text = str(exc).lower()
    code = exc.errno if isinstance(exc, OSError) else None
    full = code in _NO_SPACE or any(w in text for w in _NO_SPACE_WORDS)
    if not full and isinstance(exc, RuntimeError) and free is not None and free <= FULL_DISK_FREE_BYTES:
        full = True
    if full:
        quota = code == errno.EDQUOT or "quota" in text or "os error 122" in text
        what = "the disk quota is exceeded" if quota else "the disk is full"
        needed = (f"about {human_bytes(size_hint)} needed" if size_hint else
                  f"more than the {human_bytes(written)} written before it failed" if written else "more space needed")
        where = f"{human_bytes(free)} free in {folder}" if free is not None else f"free space unknown in {folder}"
        return OutputError(f"cannot write {path}: {what} ({needed}, {where}); free some space or write elsewhere, "
                           "then run again (no partial output was left)", path, errno.EDQUOT if quota else errno.ENOSPC)
    if isinstance(exc, OSError):
        if not folder.is_dir():
            reason = f"{folder} is a file, not a folder"
        else:
            reason = exc.strerror or str(exc)
            name = Path(exc.filename).name if exc.filename else path.name
            if name != path.name and not name.startswith(f".{path.name}."):  # not the output or its temporary file
                reason += f" ({exc.filename})"
        return OutputError(f"cannot write {path}: {reason}; check the path and the folder's permissions", path,
                           exc.errno)
    return None


def _is_write_error(exc: BaseException) -> bool:
    """OSError, RuntimeError (torch.save) or safetensors' SafetensorError (a plain Exception subclass)."""
    return isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (file or folder), else delete it.

    Readers never see a half-written file, and an existing `path` survives a failed write. The temporary path is
    `.NAME.<pid>@<host>.<random>.tmp`; what a killed writer left there is deleted by the next atomic write into the
    folder (`remove_stale_temps`). The result gets the
    umask's modes (`apply_umask_modes`). A write that fails for lack of space (or any other OS reason) raises a
    one-line `OutputError` naming `path`, the bytes needed (`size_hint`, an estimate of the output's size, if the
    caller knows it) and the bytes free.

    A folder is replaced by two renames, path -> `backup_path(path)` and temporary -> path; see `backup_path` for
    what a kill between them leaves.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
        tmp_path = Path(tmp)
        yield tmp_path
        apply_umask_modes(tmp_path)
        if tmp_path.is_dir() and path.is_dir():
            backup = backup_path(path)
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(tmp_path, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    except Exception as exc:
        # A nested atomic write into our temporary output (save_model inside a checkpoint folder) failing is our
        # failure: report `path`, not the temporary name. Any other OutputError is already final.
        nested = isinstance(exc, OutputError) and tmp_path is not None and exc.target is not None and \
            (Path(exc.target) == tmp_path or tmp_path in Path(exc.target).parents)
        if not _is_write_error(exc) or (isinstance(exc, OutputError) and not nested):
            raise
        written = 0
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                written = _tree_bytes(tmp_path)
            _remove(tmp_path)  # before measuring the free space: the partial output is not kept
        error = _write_failure(path, exc, written, size_hint)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp_path is not None:
            _remove(tmp_path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space: error messages stay one line.
    A file name that is not valid UTF-8 in it shows its raw bytes as \\xNN (`printable`)."""
    return printable(" ".join(str(text).split()))


def printable(text: str) -> str:
    """`text` writable to any UTF-8 stream: the surrogate escapes Python holds a name that is not valid UTF-8 in
    (`os.fsdecode`) become its raw bytes written \\xNN (b"caf\\xe9.wav" -> "caf\\xe9.wav"), instead of raising
    UnicodeEncodeError where the message is printed."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
    data = text.encode("utf-8")
    with atomic_path(path, size_hint=len(data)) as tmp:
        tmp.write_bytes(data)


def count_non_finite(tensor: torch.Tensor) -> int:
    """How many values of a floating-point tensor are NaN or infinite.

    A finite sum proves every value finite (NaN and inf survive addition), and summing is ~30x faster than
    `isfinite().all()` (1 s vs 0.03 s over AST-base's 87 M weights); only a non-finite sum (bad values, or finite
    ones that overflow when added) needs the element-wise count.
    """
    import torch

    if torch.isfinite(tensor.sum()):
        return 0
    return int((~torch.isfinite(tensor)).sum())


# Seconds between progress lines (`Progress`); the environment variable changes it (0: a line on every update, what
# the tests use).
PROGRESS_EVERY_S = 5.0
PROGRESS_EVERY_ENV = "AST_AUDIO_PROGRESS_EVERY"


class Progress:
    """A progress callback `progress(done, total)` for work that can take more than a few seconds, reported on stderr.

    Nothing is shown during the first `every_s` seconds (short runs stay quiet). After that: a tqdm bar when stderr
    is a terminal (and tqdm is installed), else one line `ast-audio: WHAT: DONE/TOTAL UNIT (P%), N s` every
    `every_s` seconds. The library takes such callbacks and is silent without one; the CLI makes them
    (`--no-progress`: `enabled=False`, which reports nothing). `every_s` defaults to $AST_AUDIO_PROGRESS_EVERY, else
    5 s. A context manager: leaving it takes the bar off the terminal.
    """

    def __init__(self, what: str, unit: str = "", every_s: float | None = None, stream: Any = None,
                 enabled: bool = True) -> None:
        if every_s is None:
            every_s = float(os.environ.get(PROGRESS_EVERY_ENV, PROGRESS_EVERY_S))
        self.what, self.unit, self.every_s, self.enabled = what, unit, every_s, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last = time.monotonic()
        self._bar: Any = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: float, total: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._tty:
            self._update_bar(done, total)
        elif now - self.last >= self.every_s:
            self.last = now
            self.stream.write(f"ast-audio: {self.line(done, total, now - self.started)}\n")
            self.stream.flush()

    def line(self, done: float, total: float | None, elapsed: float) -> str:
        """'WHAT: DONE/TOTAL UNIT (P%), N s' (no total: 'WHAT: DONE UNIT, N s')."""
        unit = f" {self.unit}" if self.unit else ""
        if total:
            return f"{self.what}: {_count(done)}/{_count(total)}{unit} ({100 * done / total:.0f}%), {elapsed:.0f} s"
        return f"{self.what}: {_count(done)}{unit}, {elapsed:.0f} s"

    def _update_bar(self, done: float, total: float | None) -> None:
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # no tqdm: plain lines on the terminal too
                self._tty = False
                return
            self._bar = tqdm(total=total, desc=self.what, unit=f" {self.unit}" if self.unit else "it",
                             file=self.stream, leave=False, delay=self.every_s, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Take the bar (if any) off the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count(x: float) -> str:
    """12 -> '12', 12.345 -> '12.3' (progress counts: clips, batches or seconds of audio)."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
