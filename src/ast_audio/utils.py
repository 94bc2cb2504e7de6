"""Small shared helpers: atomic file writes, one-line messages."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (file or folder), else delete it.

    Readers never see a half-written file, and an existing `path` survives a failed write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir() and path.is_dir():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(tmp_path, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space: error messages stay one line."""
    return " ".join(str(text).split())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def count_non_finite(tensor: torch.Tensor) -> int:
    """How many values of a floating-point tensor are NaN or infinite.

    A finite sum proves every value finite (NaN and inf survive addition), and summing is ~30x faster than
    `isfinite().all()` (1 s vs 0.03 s over AST-base's 87 M weights); only a non-finite sum (bad values, or finite
    ones that overflow when added) needs the element-wise count.
    """
    if torch.isfinite(tensor.sum()):
        return 0
    return int((~torch.isfinite(tensor)).sum())
