"""Stored teacher outputs for distillation (issue 22): the folder `ast-audio distill logits` writes, and its reading.

A logits folder holds:
- `index.json`: the format, the teacher (checkpoints, labels, multi_label, front end, frame head), the views (how
  many, their augmentation, the base seed), top_k, and the clips (names, their class indices when the data has
  labels, where they came from);
- `chunks/part<K>-of-<N>-<number>.npz`: the outputs of a batch of whole clips (every view of a clip is in the same
  chunk), written atomically (numpy arrays only, read with allow_pickle=False):
    clip (B,) int64: the clip's index in `index.json`'s list; failed (E,) int64: clips that could not be decoded;
    seed (B, K) int64: the seed that regenerates each view (`ast_audio.train.distill.make_view`);
    crc (B, K) int64: CRC-32 of the float32 features the teacher was run on (the student checks its own against it);
    top_index (B, K, k) int16 (int32 beyond 32767 classes) and top_prob (B, K, k) float16: the teacher's k most
    probable classes and their probabilities, highest first;
    frame_index (B, K, k) and frame_prob (B, K, t_dim, k) float16 when the teacher has a frame head: the k classes
    of the view's highest frame scores and their scores at every time column;
- `chunks/part<K>-of-<N>.done`: part K of N finished.

A kill loses at most the chunk being written (its temporary file is removed or ignored); `--resume` reads the clips
the chunks hold and skips them, so every clip-view is stored exactly once. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..utils import atomic_path, atomic_write_text, one_line

INDEX_NAME = "index.json"
CHUNK_DIR = "chunks"
FORMAT_NAME = "ast-audio-logits"
FORMAT_VERSION = 1
_CHUNK = re.compile(r"^part(\d+)-of-(\d+)-(\d+)\.npz$")


def index_dtype(num_classes: int) -> np.dtype:
    """int16 class indices while they fit (AudioSet's 527), else int32."""
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def read_logits_index(folder: str | os.PathLike) -> dict[str, Any]:
    """`index.json` of a logits folder, or a one-line ConfigError saying what to run."""
    path = Path(folder) / INDEX_NAME
    if not Path(folder).is_dir():
        raise ConfigError(f"logits folder {folder} does not exist; write it first with `ast-audio distill logits "
                          f"--teacher CKPT --data AUDIO -o {folder}`")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable logits index ({one_line(exc)}); expected the folder written by "
                          "`ast-audio distill logits`") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise ConfigError(f"{path}: not an ast-audio logits index (format {FORMAT_NAME!r})")
    if index.get("version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: logits format version {index.get('version')!r}; this version reads "
                          f"{FORMAT_VERSION}")
    return index


def write_index(folder: Path, index: dict[str, Any]) -> None:
    """Write `index.json`, or check that the one there describes the same run (a resumed or parallel part)."""
    path = folder / INDEX_NAME
    if path.is_file():
        old = read_logits_index(folder)
        differ = sorted(k for k in set(old) | set(index) if old.get(k) != index.get(k))
        if differ:
            raise ConfigError(f"{folder} holds logits of another run (its {', '.join(differ)} differ); choose "
                              "another -o/--output, or --force to replace it")
        return
    atomic_write_text(path, json.dumps(index) + "\n")


def chunk_path(folder: Path, k: int, n: int, number: int) -> Path:
    return folder / CHUNK_DIR / f"part{k}-of-{n}-{number:06d}.npz"


def done_path(folder: Path, k: int, n: int) -> Path:
    return folder / CHUNK_DIR / f"part{k}-of-{n}.done"


def chunk_part(path: Path) -> tuple[int, int]:
    """(k, n) of a chunk file named by `chunk_path`."""
    match = _CHUNK.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a chunk file name")
    return int(match[1]), int(match[2])


def chunk_files(folder: Path, part: tuple[int, int] | None = None) -> list[Path]:
    """The finished chunk files (of part (k, n) only, if given), in name order."""
    found = []
    for path in sorted((folder / CHUNK_DIR).glob("part*.npz")):
        match = _CHUNK.match(path.name)
        if match and (part is None or (int(match[1]), int(match[2])) == part):
            found.append(path)
    return found


def write_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """One chunk, atomically (a kill leaves the previous chunks and no partial file under the chunk's name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_chunk(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable logits chunk ({one_line(exc)}); delete it and run `ast-audio distill "
                          "logits --resume` to redo its clips") from None


def clips_in(paths: Iterable[Path]) -> set[int]:
    """Clips (stored or failed) of the chunks `paths`."""
    done: set[int] = set()
    for path in paths:
        chunk = read_chunk(path)
        done.update(int(c) for c in chunk["clip"])
        done.update(int(c) for c in chunk["failed"])
    return done


def fill_targets(top_index: np.ndarray, top_prob: np.ndarray, num_classes: int) -> np.ndarray:
    """(..., k) stored top-k -> (..., num_classes) float32 dense teacher probabilities, as CED fills them.

    CED (RicherMans/CED, "Consistent Ensemble Distillation") stores the top 20 of 527 and gives every other class
    min(top-k) / (C - k) (its 507 = 527 - 20): each unseen class gets an equal share of a mass no larger than the
    smallest stored probability, so no unseen class outranks a stored one and the filled mass stays below
    min(top-k). With k = C nothing is filled.
    """
    top_prob = top_prob.astype(np.float32)
    shape = top_index.shape[:-1]
    k = top_index.shape[-1]
    rest = num_classes - k
    fill = top_prob.min(axis=-1, keepdims=True) / rest if rest > 0 else np.zeros((*shape, 1), np.float32)
    dense = np.broadcast_to(fill, (*shape, num_classes)).astype(np.float32)  # (..., C)
    np.put_along_axis(dense, top_index.astype(np.int64), top_prob, axis=-1)
    return dense


@dataclass
class StoredLogits:
    """Every stored clip-view of a logits folder, in memory (~4 k + 16 bytes per clip-view: 1 GB for 2 M clips x 10
    views at top-20, less with fewer views), indexed by clip: `row[clip]` is the row of that clip in the arrays."""

    index: dict[str, Any]
    clip: np.ndarray  # (N,) int64
    seed: np.ndarray  # (N, K) int64
    crc: np.ndarray  # (N, K) int64
    top_index: np.ndarray  # (N, K, k)
    top_prob: np.ndarray  # (N, K, k) float16
    frame_index: np.ndarray | None  # (N, K, k)
    frame_prob: np.ndarray | None  # (N, K, t_dim, k) float16
    failed: np.ndarray  # (E,) int64

    @property
    def views(self) -> int:
        return int(self.seed.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.index["labels"])

    def row(self) -> dict[int, int]:
        return {int(c): i for i, c in enumerate(self.clip)}

    def targets(self, i: int, view: int) -> np.ndarray:
        """(C,) filled clip targets of row `i`, view `view`."""
        return fill_targets(self.top_index[i, view], self.top_prob[i, view], self.num_classes)

    def frame_targets(self, i: int, view: int) -> np.ndarray | None:
        """(t_dim, C) filled frame targets of row `i`, view `view` (None without a frame teacher)."""
        if self.frame_prob is None or self.frame_index is None:
            return None
        idx = np.broadcast_to(self.frame_index[i, view], self.frame_prob[i, view].shape)  # (t_dim, k)
        return fill_targets(idx, self.frame_prob[i, view], self.num_classes)


def load_logits(folder: str | os.PathLike) -> StoredLogits:
    """Read every chunk of `folder`; a ConfigError if clips are missing (an unfinished or killed run)."""
    folder = Path(folder)
    index = read_logits_index(folder)
    chunks = [read_chunk(p) for p in chunk_files(folder)]
    total = len(index["clips"])
    if not chunks:
        raise ConfigError(f"{folder}: no stored logits yet; run `ast-audio distill logits ... -o {folder}`")
    joined = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0] if name != "failed"}
    failed = np.concatenate([c["failed"] for c in chunks])
    have = len(set(joined["clip"].tolist()) | set(failed.tolist()))
    if have < total:
        raise ConfigError(f"{folder}: logits of {have} of {total} clips; finish the run (`ast-audio distill logits "
                          "--resume`, every --shard part) before training on it")
    if len(joined["clip"]) != len(set(joined["clip"].tolist())):
        raise ConfigError(f"{folder}: a clip is stored twice (chunks of two different runs?); write it again")
    return StoredLogits(index=index, clip=joined["clip"], seed=joined["seed"], crc=joined["crc"],
                        top_index=joined["top_index"], top_prob=joined["top_prob"],
                        frame_index=joined.get("frame_index"), frame_prob=joined.get("frame_prob"), failed=failed)


def storage_bytes(folder: str | os.PathLike) -> int:
    """Bytes of a logits folder's chunks and index (for the storage-per-clip-view figure)."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in [folder / INDEX_NAME, *chunk_files(folder)] if p.is_file())
