"""Class names: label files, checking names against a model's classes, and choosing the classes to report.

Label files are the reference `index,mid,display_name` CSV (e.g. AudioSet's class_labels_indices.csv). The
reference recipes ship one per dataset (`egs/*/data/*class_labels_indices.csv`, spec §0); the three are package data
here (`builtin_label_csv`, data/labels/README.md gives their origin and licence). Names are double-quoted when they
contain commas ("Male speech, man speaking"), so the file is read with `csv`.

Scores are (C,) vectors (torch tensors or anything indexable that yields numbers); nothing here imports torch.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import AstAudioError, CheckpointError, ConfigError

LABEL_CSV_HEADER = ("index", "mid", "display_name")
BUILTIN_LABELS = ("audioset", "esc50", "speechcommands")


def builtin_label_csv(name: str) -> Path:
    """The label CSV shipped with the package for data set `name` ("audioset": 527 classes, "esc50": 50,
    "speechcommands": 35 words)."""
    if name not in BUILTIN_LABELS:
        raise ConfigError(f"no built-in label file {name!r}; expected one of {', '.join(BUILTIN_LABELS)}")
    return Path(str(resources.files("ast_audio") / "data" / "labels" / f"{name}_class_labels_indices.csv"))


def builtin_labels(name: str) -> list[str]:
    """The class names of the built-in label file `name` (see `builtin_label_csv`), in index order."""
    return read_label_csv(builtin_label_csv(name))


def read_label_table(path: str | os.PathLike,
                     error: type[AstAudioError] = CheckpointError) -> list[tuple[str, str]]:
    """Read an `index,mid,display_name` CSV into (mid, display_name) rows ordered by `index`.

    The indices must be exactly 0..n-1 (in any row order) and every name non-empty.

    Raises:
        `error` (CheckpointError by default; the training data loader passes ConfigError): the file is missing,
            unreadable, or not in this format; the message names the offending line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise error(f"{path}: cannot read label CSV ({exc}); expected a text file with the header "
                    f"{','.join(LABEL_CSV_HEADER)}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # tolerate blank lines
    if not rows or tuple(cell.strip() for cell in rows[0]) != LABEL_CSV_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise error(f"{path}: label CSV must start with the header {','.join(LABEL_CSV_HEADER)}, found {found!r}")
    by_index: dict[int, tuple[str, str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise error(f"{path}:{line_no}: expected 3 fields (index,mid,display_name), got {len(row)}; "
                        "quote names that contain commas")
        index_text, mid, name = (cell.strip() for cell in row)
        try:
            index = int(index_text)
        except ValueError:
            raise error(f"{path}:{line_no}: index {index_text!r} is not an integer") from None
        if index in by_index:
            raise error(f"{path}:{line_no}: index {index} appears twice")
        if not name:
            raise error(f"{path}:{line_no}: empty display_name for index {index}")
        by_index[index] = (mid, name)
    if not by_index:
        raise error(f"{path}: label CSV has a header but no classes")
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(len(by_index))) - set(by_index))
        raise error(f"{path}: indices must be 0..{len(by_index) - 1} with none missing; missing {missing[:5]}")
    return [by_index[i] for i in range(len(by_index))]


def read_label_csv(path: str | os.PathLike) -> list[str]:
    """Class names from an `index,mid,display_name` CSV, ordered by `index` (see `read_label_table`).

    Raises:
        CheckpointError: the file is missing, unreadable, or not in this format.
    """
    return [name for _mid, name in read_label_table(path)]


def resolve_labels(labels: str | os.PathLike | Sequence[str]) -> list[str]:
    """`labels` as a list of names: a path (str or PathLike) is read with `read_label_csv`, a sequence is copied."""
    if isinstance(labels, (str, os.PathLike)):
        return read_label_csv(labels)
    names = list(labels)
    if not all(isinstance(name, str) for name in names):
        raise CheckpointError("labels must be a CSV path or a sequence of strings")
    return names


# ----------------------------------------------------------------------------------------------------------------
# Names against a model's classes


def check_labels(names: Sequence[str], labels: Sequence[str], where: str = "") -> None:
    """Raise a one-line ConfigError if any of `names` is not one of the model's `labels` (`where`: e.g. a file)."""
    known = set(labels)
    unknown = [n for n in names if n not in known]
    if unknown:
        examples = ", ".join(repr(n) for n in list(labels)[:5])
        more = f" (and {len(labels) - 5} more)" if len(labels) > 5 else ""
        place = f" in {where}" if where else ""
        raise ConfigError(f"unknown class name(s) {', '.join(repr(n) for n in unknown[:5])}{place}; the model's "
                          f"classes are {examples}{more}; check spelling and case")


def parse_names(values: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Class names from comma-separated option values, checked against `labels`.

    AudioSet names can contain commas ("Male speech, man speaking"), so the longest run of comma-separated
    pieces that is a label is taken whole; anything else is a single name (and reported if unknown).
    """
    known = set(labels)
    names: list[str] = []
    for value in values:
        if value.strip() in known:
            names.append(value.strip())
            continue
        pieces = [p.strip() for p in value.split(",")]
        i = 0
        while i < len(pieces):
            match, end = pieces[i], i + 1  # default: one piece (reported below if unknown)
            for j in range(len(pieces), i, -1):  # the longest run of pieces that is a label
                found = next((c for c in (", ".join(pieces[i:j]), ",".join(pieces[i:j])) if c in known), None)
                if found is not None:
                    match, end = found, j
                    break
            if match:
                names.append(match)
            i = end
    check_labels(names, labels)
    return names


def selected_classes(labels: Sequence[str], only: Sequence[str] | None = None,
                     exclude: Sequence[str] = ()) -> list[int]:
    """Indices of the classes kept by `only` / `exclude` (names checked against `labels`)."""
    check_labels(list(only or ()) + list(exclude), labels)
    keep = set(only) if only is not None else set(labels)
    drop = set(exclude)
    return [i for i, label in enumerate(labels) if label in keep and label not in drop]


# ----------------------------------------------------------------------------------------------------------------
# The classes to report from a (C,) score vector


def top_labels(scores: Any, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` best (label, score) pairs of a (C,) score tensor, best first."""
    values, index = scores.topk(min(k, scores.shape[0]))
    return [(labels[i], float(v)) for v, i in zip(values.tolist(), index.tolist(), strict=True)]


def filter_top(scores: Any, labels: Sequence[str], *, top_k: int, thresholds: Mapping[str, float] | None = None,
               keep: Sequence[int] | None = None) -> list[tuple[str, float]]:
    """Best (label, score) pairs among the classes in `keep` (default all); with `thresholds`, only the classes
    listed there whose score reaches their threshold (all of them, best first, not capped at top_k)."""
    index = list(range(len(labels))) if keep is None else list(keep)
    if thresholds is not None:
        index = [i for i in index if labels[i] in thresholds and float(scores[i]) >= thresholds[labels[i]]]
        index.sort(key=lambda i: -float(scores[i]))
        return [(labels[i], float(scores[i])) for i in index]
    index.sort(key=lambda i: -float(scores[i]))
    return [(labels[i], float(scores[i])) for i in index[:top_k]]
