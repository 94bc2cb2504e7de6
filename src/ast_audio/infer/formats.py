"""Text and JSON of results, one implementation for the command line and the server (so they cannot drift apart).

- tags (`TagResult`s): a table, JSON (`TagResult.to_dict`) or CSV file,rank,label,score (`format_tags`);
- events: JSON, CSV file,label,onset,offset,score, an Audacity label track or SRT subtitles (`format_events` for
  one input, `format_event_files` for several); the JSON of one input is `events_document`, which `ast-audio events
  --format json` lists and the server's /v1/events returns (plus the window scores it draws, `timeline_view`);
- the DCASE formats that sed_eval, sed_scores_eval and psds_eval read: an event table `filename onset offset
  event_label` (`dcase_events`; `ast-audio events --format dcase`), a durations table `filename duration`
  (`dcase_durations`), and per-file score tables `onset offset <class...>` on gapless pieces of time
  (`scores_tsv`; `ast-audio events --scores-dir`). All tab-separated with a header line; `ast_audio.infer.tsv`
  reads the event and durations tables back.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import torch

from ..errors import ConfigError
from .events import Event, ScoreGrid
from .names import EVENT_FORMATS, TAG_FORMATS
from .plots import class_colour
from .stream import Timeline
from .tagger import TagResult
from .tsv import DURATION_COLUMNS as DCASE_DURATION_COLUMNS
from .tsv import EVENT_COLUMNS as DCASE_EVENT_COLUMNS

_EVENT_CSV_HEADER = ("file", "label", "onset", "offset", "score")


# ----------------------------------------------------------------------------------------------------------------------
# Tags


def format_tags(results: Sequence[TagResult], fmt: str = "table", *, all_scores: bool = False) -> str:
    """Tag results as text: "table" (per clip its top labels and, for several windows, each window's top-1),
    "json" (a list of `TagResult.to_dict`; `all_scores` adds every class's clip score) or "csv"
    (file,rank,label,score)."""
    if fmt == "json":
        return json.dumps([r.to_dict(all_scores=all_scores) for r in results], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "rank", "label", "score"])
        for r in results:
            for rank, (label, score) in enumerate(r.top, 1):
                writer.writerow([r.name, rank, label, f"{score:.6g}"])
        return buffer.getvalue()
    if fmt == "table":
        return _tag_table(results)
    raise ConfigError(f"unknown tag format {fmt!r}; expected one of {', '.join(TAG_FORMATS)}")


def _tag_table(results: Sequence[TagResult]) -> str:
    lines = []
    for r in results:
        n = len(r.windows)
        extra = f", {n} windows, {r.aggregate} over windows" if n > 1 else ""
        lines.append(f"{r.name}  ({r.duration_s:.2f} s{extra})")
        width = max((len(label) for label, _ in r.top), default=0)
        for rank, (label, score) in enumerate(r.top, 1):
            lines.append(f"  {rank:>3}. {label:<{width}}  {score:.4f}")
        if n > 1:
            lines.append("  windows (top-1):")
            for w in r.windows:
                label, score = w.top[0]
                lines.append(f"    {w.start_s:8.2f} - {w.end_s:8.2f} s  {label:<{width}}  {score:.4f}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Events


def events_document(name: str, timeline: Timeline, events: Sequence[Event]) -> dict[str, Any]:
    """The JSON of one input's events: {"file", "duration_s", "window_s", "hop_s", ["frame_s",] "events":
    [Event.to_dict()]} (seconds rounded to the microsecond; "frame_s", the frame column, for a frame model's
    scores), as `ast-audio events --format json` lists them and /v1/events returns."""
    frames = {} if timeline.frame_s is None else {"frame_s": round(float(timeline.frame_s), 6)}
    return {"file": name, "duration_s": round(float(timeline.duration_s), 6),
            "window_s": round(float(timeline.window_s), 6), "hop_s": round(float(timeline.hop_s), 6), **frames,
            "events": [e.to_dict() for e in events]}


def srt_time(seconds: float) -> str:
    """Seconds -> SRT time HH:MM:SS,mmm (rounded to the millisecond)."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _clean(text: str) -> str:
    return re.sub(r"[\t\r\n]+", " ", text)


def format_events(events: Sequence[Event], fmt: str, *, file: str | None = None) -> str:
    """Events as text.

    json: a list of {"file"?, "label", "onset_s", "offset_s", "score"}; csv: header file,label,onset,offset,score
    (seconds to the microsecond); audacity: a label track, one `onset<TAB>offset<TAB>label` line per event;
    srt: numbered subtitles `HH:MM:SS,mmm --> HH:MM:SS,mmm` with the text `label (score)`.
    """
    if fmt == "json":
        items = [({"file": file} if file is not None else {}) | e.to_dict() for e in events]
        return json.dumps(items, indent=2) + "\n"
    if fmt == "csv":
        return _events_csv([(file or "", events)])
    if fmt == "audacity":
        return "".join(f"{e.onset_s:.6f}\t{e.offset_s:.6f}\t{_clean(e.label)}\n" for e in events)
    if fmt == "dcase":
        return dcase_events((dcase_name(file or ""), e.onset_s, e.offset_s, e.label) for e in events)
    if fmt == "srt":
        blocks = [f"{n}\n{srt_time(e.onset_s)} --> {srt_time(e.offset_s)}\n{_clean(e.label)} ({e.score:.2f})\n"
                  for n, e in enumerate(events, 1)]
        return "\n".join(blocks)
    raise ConfigError(f"unknown event format {fmt!r}; expected one of {', '.join(EVENT_FORMATS)}")


def _events_csv(groups: Sequence[tuple[str, Sequence[Event]]]) -> str:
    """One CSV (header file,label,onset,offset,score; seconds to the microsecond) of the events of several inputs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_EVENT_CSV_HEADER)
    for file, events in groups:
        for e in events:
            writer.writerow([file, e.label, f"{e.onset_s:.6f}", f"{e.offset_s:.6f}", f"{e.score:.6f}"])
    return buffer.getvalue()


def format_event_files(results: Sequence[tuple[str, Timeline, Sequence[Event]]], fmt: str) -> str:
    """The events of several inputs, (name, timeline, events) each, as one text: json a list of `events_document`s,
    csv one table with a file column, audacity/srt each input's text one after the other (blank-line separated)."""
    if fmt == "json":
        return json.dumps([events_document(name, timeline, events) for name, timeline, events in results],
                          indent=2) + "\n"
    if fmt == "csv":
        return _events_csv([(name, events) for name, _, events in results])
    if fmt == "dcase":
        return dcase_events((dcase_name(name), e.onset_s, e.offset_s, e.label)
                            for name, _, events in results for e in events)
    if fmt in EVENT_FORMATS:
        return "\n".join(format_events(events, fmt) for _, _, events in results)
    raise ConfigError(f"unknown event format {fmt!r}; expected one of {', '.join(EVENT_FORMATS)}")


def dcase_name(path: str) -> str:
    """The `filename` of a file in the DCASE tables: its base name with extension (the scorers match score files
    and durations by the base name without extension)."""
    return PurePath(path).name


def _dcase_field(text: str) -> str:
    return _clean(text).strip()


def dcase_events(rows: Iterable[tuple[str, float, float, str]]) -> str:
    """(filename, onset, offset, label) rows -> the DCASE event table: header `filename onset offset event_label`,
    tab-separated, seconds to the microsecond."""
    lines = ["\t".join(DCASE_EVENT_COLUMNS)]
    lines += [f"{_dcase_field(name)}\t{onset:.6f}\t{offset:.6f}\t{_dcase_field(label)}"
              for name, onset, offset, label in rows]
    return "\n".join(lines) + "\n"


def dcase_durations(durations: Mapping[str, float]) -> str:
    """{filename: seconds} -> the DCASE durations table: header `filename duration`, tab-separated."""
    lines = ["\t".join(DCASE_DURATION_COLUMNS)]
    lines += [f"{_dcase_field(dcase_name(name))}\t{seconds:.6f}" for name, seconds in durations.items()]
    return "\n".join(lines) + "\n"


def scores_tsv(grid: ScoreGrid) -> str:
    """A `ScoreGrid` -> the sed_scores_eval score table: header `onset offset <class...>`, one row per piece of
    time (gapless, non-overlapping, 0 to the file's end), tab-separated, scores to 6 decimals."""
    lines = ["\t".join(["onset", "offset", *(_dcase_field(label) for label in grid.labels)])]
    for m in range(grid.scores.shape[0]):
        values = "\t".join(f"{v:.6f}" for v in grid.scores[m].tolist())
        lines.append(f"{grid.bounds_s[m]:.6f}\t{grid.bounds_s[m + 1]:.6f}\t{values}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# Window scores (timelines)


def timeline_view(timeline: Timeline, events: Sequence[Event], top_n: int, threshold: float,
                  keep: Sequence[int] | None = None, thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The window scores worth drawing: the `top_n` classes by peak score (among `keep`, default all), plus every
    class with an event.

    Returns {"starts_s": [...], "ends_s": [...], "threshold": t, "classes": [{"label", "colour", "peak", "threshold",
    "scores"}]}, classes ordered by peak score, best first; a class's threshold is its entry in `thresholds`, else t;
    its colour is `plots.class_colour` (the colour the PNG timeline gives it).
    """
    thresholds = thresholds or {}
    scores = timeline.scores.float()  # (N windows, C)
    peaks = scores.max(dim=0).values if scores.shape[0] else torch.zeros(scores.shape[1])  # (C,)
    order = peaks.argsort(descending=True, stable=True).tolist()
    if keep is not None:
        kept = set(keep)
        order = [i for i in order if i in kept]
    chosen = order[:top_n]
    with_events = {timeline.labels.index(e.label) for e in events if e.label in timeline.labels}
    chosen += [i for i in order if i in with_events and i not in chosen]
    return {
        "starts_s": [round(float(s), 6) for s in timeline.starts_s.tolist()],
        "ends_s": [round(float(s), 6) for s in timeline.ends_s.tolist()],
        "threshold": threshold,
        "classes": [{"label": timeline.labels[i], "colour": class_colour(i), "peak": float(peaks[i]),
                     "threshold": float(thresholds.get(timeline.labels[i], threshold)),
                     "scores": [round(float(v), 6) for v in scores[:, i].tolist()]} for i in chosen],
    }
