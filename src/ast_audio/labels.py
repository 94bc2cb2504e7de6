"""Class-name files: the reference `index,mid,display_name` CSV (e.g. AudioSet's class_labels_indices.csv).

The reference recipes ship one per dataset (`egs/*/data/*class_labels_indices.csv`, spec §0). Names are
double-quoted when they contain commas ("Male speech, man speaking"), so the file is read with `csv`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import AstAudioError, CheckpointError

LABEL_CSV_HEADER = ("index", "mid", "display_name")


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
