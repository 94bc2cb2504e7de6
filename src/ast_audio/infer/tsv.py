"""The one reader of the DCASE tab-separated tables: event tables (truth, predictions, training's `strong.tsv`), weak
labels (`weak.tsv`) and durations (`durations.tsv`). No torch: `eval-events`, `calibrate --truth`,
`events --plot-truth` and the SED training data all read through here, so they accept the same files and refuse
the same rows.

Formats (tab-separated, a header line first, empty lines ignored, UTF-8 with or without a byte-order mark):
- event table: `filename onset offset event_label`; one row per event, seconds. A row whose onset, offset and
  label are all empty lists a file with no events (DESED's convention).
- weak labels: `filename event_labels`, the labels comma-separated (empty: a clip with no class).
- durations: `filename duration`, seconds.

Every row must have as many fields as the header. Times must be finite, >= 0, at most `MAX_SECONDS`, and an
event's onset not after its offset. Given the known files (`files`), a row naming another file is refused (a file
is known by its name as written or by its audio id, the name without its extension: the scorers' key); given the
label set (`labels`), an unknown label is; given the durations, an event ending more than `END_TOLERANCE_S` after
its file's end is. A bad table raises one `ConfigError` line: `PATH:ROW: what is wrong; what was expected`, with
the number of further bad rows when there are more.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..errors import ConfigError

EVENT_COLUMNS = ("filename", "onset", "offset", "event_label")
WEAK_COLUMNS = ("filename", "event_labels")
DURATION_COLUMNS = ("filename", "duration")
MAX_SECONDS = 1e6  # ~11.6 days: longer times are typing errors (1e308 would make the scorers allocate without end)
END_TOLERANCE_S = 0.01  # an event may end this far past its file's end (one 10 ms frame: rounding in annotations)


def audio_id(filename: str) -> str:
    """The scorers' key of a file: its name without the extension (sed_scores_eval's `rsplit('.', 1)[0]`)."""
    return filename.rsplit(".", maxsplit=1)[0]


@dataclass(frozen=True)
class StrongEvent:
    """One event row: the file (as written in the table), onset and offset in seconds, the label, and the row's
    line number in the table (the header is line 1)."""

    filename: str
    onset: float
    offset: float
    label: str
    row: int


@dataclass(frozen=True)
class StrongTable:
    """An event table: every file it lists (first-seen order, files with no events included) and its events."""

    path: Path
    files: tuple[str, ...]
    events: tuple[StrongEvent, ...]

    def by_file(self) -> dict[str, list[tuple[float, float, str]]]:
        """{filename as written: [(onset, offset, label)]}; files with no events map to []."""
        out: dict[str, list[tuple[float, float, str]]] = {name: [] for name in self.files}
        for e in self.events:
            out[e.filename].append((e.onset, e.offset, e.label))
        return out

    def by_audio_id(self) -> dict[str, list[tuple[float, float, str]]]:
        """{audio id: [(onset, offset, label)]}: the scorers' view (`audio_id`)."""
        out: dict[str, list[tuple[float, float, str]]] = {}
        for name, events in self.by_file().items():
            out.setdefault(audio_id(name), []).extend(events)
        return out

    def labels(self) -> list[str]:
        """The labels of the events, sorted."""
        return sorted({e.label for e in self.events})

    def has_file(self, path: str | os.PathLike) -> bool:
        """Whether the table lists the file at `path` (by its base name, as `events_of` matches)."""
        name = PurePath(path).name
        return any(PurePath(f).name == name for f in self.files)

    def events_of(self, path: str | os.PathLike) -> list[tuple[float, float, str]]:
        """(onset, offset, label) of the rows whose file has the base name of `path` (a file to draw the truth of,
        wherever it lies)."""
        name = PurePath(path).name
        return [(e.onset, e.offset, e.label) for e in self.events if PurePath(e.filename).name == name]


class _Problems:
    """Collects the bad rows of one table and raises one line naming the first (and how many more)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[str] = []

    def add(self, row: int, message: str) -> None:
        self.found.append(f"{self.path}:{row}: {message}")

    def raise_any(self) -> None:
        if self.found:
            more = len(self.found) - 1
            tail = f" ({more} more bad row{'s' if more > 1 else ''} after it)" if more else ""
            raise ConfigError(self.found[0] + tail)


def _lines(path: Path, what: str, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of every non-empty line, the header first."""
    expected = f"expected a tab-separated {what} with the header {' '.join(columns)}"
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found; {expected} (docs/events.md)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc}); {expected}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, [field.strip() for field in line.split("\t")]


def _table(path: str | os.PathLike, what: str, columns: tuple[str, ...]) -> tuple[Path, list[str],
                                                                                   list[tuple[int, list[str]]]]:
    """The header (checked to hold `columns`) and the data rows of a table; a wrong field count is an error."""
    path = Path(path)
    lines = list(_lines(path, what, columns))
    if not lines:
        raise ConfigError(f"{path}: the {what} is empty; expected the header {' '.join(columns)} and rows")
    number, header = lines[0]
    missing = [c for c in columns if c not in header]
    if missing:
        shown = " ".join(header)[:80]
        raise ConfigError(f"{path}:{number}: missing or wrong header ({shown!r} lacks {', '.join(missing)}); "
                          f"expected the first line to be the tab-separated header {' '.join(columns)}")
    if len(set(header)) != len(header):
        raise ConfigError(f"{path}:{number}: the header names a column twice; expected {' '.join(columns)}")
    problems = _Problems(path)
    rows = []
    for number, fields in lines[1:]:
        if len(fields) != len(header):
            problems.add(number, f"{len(fields)} tab-separated field(s), the header has {len(header)} "
                                 f"({' '.join(header)})")
        else:
            rows.append((number, fields))
    problems.raise_any()
    return path, header, rows


def _seconds(text: str, name: str) -> tuple[float | None, str | None]:
    """(value, None) for a usable time in seconds, else (None, what is wrong)."""
    try:
        value = float(text)
    except ValueError:
        return None, f"{name} {text[:40]!r} is not a number (seconds)"
    if not math.isfinite(value):
        return None, f"{name} {text[:40]!r} is not finite; expected seconds"
    if value < 0:
        return None, f"{name} {value:g} is negative; expected seconds from the file's start"
    if value > MAX_SECONDS:
        return None, f"{name} {value:g} s is beyond {MAX_SECONDS:g} s; split longer recordings"
    return value, None


def _known(filename: str, files: Collection[str] | None) -> bool:
    return files is None or filename in files or audio_id(filename) in files


def _duration_of(filename: str, durations: Mapping[str, float] | None) -> float | None:
    if durations is None:
        return None
    if filename in durations:
        return durations[filename]
    return durations.get(audio_id(filename))


def _unknown_file(filename: str, files: Collection[str]) -> str:
    example = next(iter(sorted(files)), None)
    return (f"file {filename!r} is not one of the {len(files)} known file(s)"
            + (f" (e.g. {example!r})" if example is not None else "") + "; list only files that exist")


def _unknown_label(label: str, labels: Collection[str]) -> str:
    shown = ", ".join(repr(x) for x in sorted(labels)[:5])
    more = ", ..." if len(labels) > 5 else ""
    return f"label {label!r} is not one of the {len(labels)} known classes ({shown}{more})"


def read_strong(path: str | os.PathLike, *, files: Collection[str] | None = None,
                labels: Collection[str] | None = None, durations: Mapping[str, float] | None = None,
                what: str = "event table") -> StrongTable:
    """Read and check a DCASE event table (`filename onset offset event_label`; module docstring).

    Args:
        files: the known files (names or audio ids); a row naming another file is refused.
        labels: the known classes; an event of another class is refused.
        durations: {filename or audio id: seconds}; an event ending past its file's end is refused (files not in
            it are not checked).
        what: the table's name in messages ("truth", "predictions", ...).
    """
    path, header, rows = _table(path, what, EVENT_COLUMNS)
    col = {name: header.index(name) for name in EVENT_COLUMNS}
    problems = _Problems(path)
    names: dict[str, None] = {}
    events: list[StrongEvent] = []
    for number, fields in rows:
        filename, onset_text, offset_text, label = (fields[col[c]] for c in EVENT_COLUMNS)
        problem = _strong_problem(filename, onset_text, offset_text, label, files, labels)
        if problem is None and (onset_text or offset_text or label):
            onset, offset = float(onset_text), float(offset_text)
            end = _duration_of(filename, durations)
            if end is not None and offset > end + END_TOLERANCE_S:
                problem = f"event {label!r} ends at {offset:g} s, after the file's end at {end:g} s"
            else:
                events.append(StrongEvent(filename, onset, offset, label, number))
        if problem is not None:
            problems.add(number, problem)
        else:
            names.setdefault(filename)
    problems.raise_any()
    return StrongTable(path, tuple(names), tuple(events))


def _strong_problem(filename: str, onset_text: str, offset_text: str, label: str,
                    files: Collection[str] | None, labels: Collection[str] | None) -> str | None:
    """What is wrong with one event row, or None."""
    if not filename:
        return "the filename is empty"
    if not _known(filename, files):
        assert files is not None
        return _unknown_file(filename, files)
    if not (onset_text or offset_text or label):
        return None  # a file with no events
    onset, problem = _seconds(onset_text, "onset")
    if problem is not None:
        return problem
    offset, problem = _seconds(offset_text, "offset")
    if problem is not None:
        return problem
    assert onset is not None and offset is not None
    if onset > offset:
        return f"onset {onset:g} s is after offset {offset:g} s"
    if not label:
        return "the event_label is empty (a file with no events leaves onset, offset and label all empty)"
    if labels is not None and label not in labels:
        return _unknown_label(label, labels)
    return None


def read_weak(path: str | os.PathLike, *, files: Collection[str] | None = None,
              labels: Collection[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Read and check a weak-label table (`filename event_labels`, comma-separated) -> {filename: labels}. A file
    listed twice, an empty label between commas, an unknown file or label (given `files` / `labels`) is refused."""
    path, header, rows = _table(path, "weak-label table", WEAK_COLUMNS)
    name_col, labels_col = header.index("filename"), header.index("event_labels")
    problems = _Problems(path)
    out: dict[str, tuple[str, ...]] = {}
    for number, fields in rows:
        filename, text = fields[name_col], fields[labels_col]
        names = tuple(dict.fromkeys(x.strip() for x in text.split(","))) if text else ()
        problem = _file_problem(filename, files, out, "expected one row per file with its labels comma-separated")
        if problem is None and "" in names:
            problem = f"event_labels {text[:60]!r} has an empty label; expected labels separated by single commas"
        elif problem is None and labels is not None and any(n not in labels for n in names):
            problem = _unknown_label(next(n for n in names if n not in labels), labels)
        if problem is not None:
            problems.add(number, problem)
        else:
            out[filename] = names
    problems.raise_any()
    return out


def _file_problem(filename: str, files: Collection[str] | None, seen: Collection[str], once: str) -> str | None:
    """What is wrong with a per-file row's filename (empty, unknown given `files`, already in `seen`), or None;
    `once` says what one row per file should hold. Shared by the weak-label and durations tables."""
    if not filename:
        return "the filename is empty"
    if not _known(filename, files):
        assert files is not None
        return _unknown_file(filename, files)
    if filename in seen:
        return f"file {filename!r} is listed twice; {once}"
    return None


def read_durations(path: str | os.PathLike, *, files: Collection[str] | None = None) -> dict[str, float]:
    """Read and check a durations table (`filename duration`) -> {filename as written: seconds}. A file listed
    twice, a duration that is not a finite number in [0, MAX_SECONDS] or an unknown file (given `files`) is
    refused."""
    path, header, rows = _table(path, "durations table", DURATION_COLUMNS)
    name_col, duration_col = header.index("filename"), header.index("duration")
    problems = _Problems(path)
    out: dict[str, float] = {}
    for number, fields in rows:
        filename = fields[name_col]
        value, problem = _seconds(fields[duration_col], "duration")
        problem = _file_problem(filename, files, out, "expected one duration per file") or problem
        if problem is not None:
            problems.add(number, problem)
        else:
            assert value is not None
            out[filename] = value
    problems.raise_any()
    return out


def by_audio_id(durations: Mapping[str, float]) -> dict[str, float]:
    """{filename: seconds} -> {audio id: seconds} (the scorers' keys)."""
    return {audio_id(name): seconds for name, seconds in durations.items()}
