"""Archives: run a per-file job over millions of files into one JSON-lines file, resumable and split over processes.

`run_archive(files, output, job)` decodes the files in DataLoader worker processes (so the model never waits on
I/O), hands each batch of decoded waveforms to `job` (tagging, events, later embeddings: any function from
(names, waveforms) to one JSON-ready dict per file) and appends the batch's lines to `output` with one write and an
fsync. A kill loses at most the batch being written: `--resume` (`resume=True`) reads the files already in `output`
and skips them, so a killed run resumed gives every file exactly once. What it cannot read back is repaired where
that is provably right, and said in one warning line: the unfinished last line of a killed write, or a damaged line
anywhere, is dropped, and the files left without a line are redone.

Splitting: `share(files, k, n)` is part k of n of the list, file i going to part i % n (balanced to within one file,
no I/O needed to decide it); part k writes `<output>.part<k>-of-<n>` and, when it is complete, a `.done` marker
holding its file count and SHA-256 digests of its files and of the whole list. Whichever part finishes last merges
the parts into `output` (`merge_parts`, also `ast-audio merge-parts`), in the order of the original list: part
i % n holds file i at line i // n, so the merge interleaves the parts round-robin and equals a one-process run's file
line for line. The merge first checks every part against its marker (line count, files and their order), so a part
with a lost line, a part cut to nothing, or a marker without its part is refused in one line, never merged.

A file that cannot be decoded or scored gets a line {"file": ..., "error": "<one line>"} (and the caller's
`on_error`, the CLI's stderr line); it counts as done, so `--resume` does not retry it; `retry_failed=True`
(`--retry-failed`) does, and the output (or part) is then rewritten in the list's order with each file's newest line.

File names are bytes on Linux: a name that is not valid UTF-8 reaches Python as surrogate escapes (`os.fsdecode`),
is written as JSON escapes `\\udcXX` (the line stays valid UTF-8 JSON, and `json.loads` then `os.fsencode` give
back the same bytes), and is read back equal, so `--resume` recognises it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..audio.io import load_audio
from ..errors import AstAudioError, AstAudioWarning, ConfigError
from ..utils import atomic_path, atomic_write_text, one_line, remove_stale_temps
from .windowing import Windowing, resolve, tag_windowing

# Extensions taken from a folder given as the file list (what libsndfile decodes).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
                              ".w64", ".caf"})
# Test hook: the process kills itself with SIGKILL once this many lines are written (the resume tests).
KILL_HOOK = "AST_AUDIO_TEST_KILL_AFTER_LINES"
# A job: (names, waveforms (N_i,) at the model rate) -> one JSON-ready dict per file (with "file"), in order.
Job = Callable[[Sequence[str], Sequence[torch.Tensor]], list[dict[str, Any]]]
MARKER_FORMAT = "ast-audio-archive-part"
MARKER_VERSION = 2


def list_files(source: str | os.PathLike) -> list[str]:
    """The files of `source`: a folder (audio files under it, recursively, sorted) or a text file with one path per
    line (blank lines and lines starting with # ignored; relative paths are relative to the list's folder).

    A list is split on "\\n" only (a name may hold any other character, U+2028 and form feeds included) and each
    line is taken as written, less a trailing "\\r"; its bytes become the name as the OS would give it (`os.fsdecode`:
    bytes that are not UTF-8 are kept as surrogate escapes)."""
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file list ({one_line(exc)}); expected a folder or a text file "
                          "with one audio path per line") from None
    files = []
    for raw in data.split(b"\n"):
        line = os.fsdecode(raw.removesuffix(b"\r"))
        if raw.strip() and not line.startswith("#"):
            files.append(line if os.path.isabs(line) else str(path.parent / line))
    return files


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (k, n) with 0 <= k < n (K is 0-based, as SLURM_ARRAY_TASK_ID with --array=0-(N-1))."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects K/N (part K of N, 0 <= K < N), got {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard expects K/N with 0 <= K < N, got {text!r}")
    return k, n


def torchrun_shard() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when started by torchrun with several processes, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def share(files: Sequence[str], k: int, n: int) -> list[str]:
    """Part k of n: files k, k + n, k + 2n, ... (sizes differ by at most one file)."""
    return list(files[k::n])


def part_path(output: str | os.PathLike, k: int, n: int) -> Path:
    return Path(f"{output}.part{k}-of-{n}")


def _done_path(part: Path) -> Path:
    return Path(f"{part}.done")


def json_line(row: dict[str, Any]) -> bytes:
    """One output line: `row` as JSON, UTF-8, ending in a newline. Surrogate escapes (a file name that is not valid
    UTF-8) become the JSON escapes \\udcXX, which `json.loads` reads back as the same str."""
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def names_digest(names: Sequence[str]) -> str:
    """SHA-256 of the names in order (each as the OS's bytes plus a newline): what a part's marker records of its
    files and of the whole list, so that a merge can check a part without the list."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(os.fsencode(name) + b"\n")
    return digest.hexdigest()


def _row(line: bytes) -> dict[str, Any] | None:
    """One whole output line as its row, or None if it is not a JSON object with a string "file" ending in a
    newline (a damaged line, or the unfinished last line of a killed write)."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return row if isinstance(row, dict) and isinstance(row.get("file"), str) else None


def _again(k: int, n: int) -> str:
    return f"run part {k} again (--shard {k}/{n} --resume; it redoes only what is missing)"


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line with its newline) of every line of `path`; a last line without a newline included."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            yield offset, line
            offset += len(line)


@dataclass
class _Existing:
    """What `--resume` finds in an output: the files with a line, in the order of the lines."""

    files: list[str]
    failed: set[str]  # files whose (last) line is an error line


def _read_existing(path: Path, mine: Sequence[str]) -> _Existing:
    """Read an output back for `--resume`, repairing what can be proven: a line that is not a whole archive row (the
    unfinished last line of a killed write, or a line damaged anywhere) is dropped, one warning line says so, and
    the files left without a line are redone. Refused (ConfigError): an output with no readable row at all (not an
    archive output), or rows naming files outside this run's list (written for another list or split)."""
    if not path.exists():
        return _Existing([], set())
    files: list[str] = []
    failed: set[str] = set()
    damaged: list[int] = []  # line numbers (1-based)
    keep_until = 0  # bytes of whole lines before the first damaged one
    mine_set = set(mine)
    for number, (offset, line) in enumerate(_lines(path), 1):
        row = _row(line)
        if row is None:
            damaged.append(number)
            continue
        name = row["file"]
        if name not in mine_set:
            raise ConfigError(f"{path}:{number}: names {name!r}, which is not in this run's list of files: the output "
                              "was written for another list or split; use the same --files-from and --shard, or "
                              "another --output")
        if not damaged:
            keep_until = offset + len(line)
        files.append(name)
        if "error" in row:
            failed.add(name)
        else:
            failed.discard(name)
    if damaged and not files:
        raise ConfigError(f"{path}: no line is an ast-audio archive row (a JSON object with a \"file\"); it is not "
                          "the output of an archive run: choose another --output")
    if damaged:
        _drop_lines(path, damaged, keep_until)
    return _Existing(files, failed)


def _drop_lines(path: Path, damaged: list[int], keep_until: int) -> None:
    """Remove the damaged lines of `path` (in place when they are all at the end, else by an atomic rewrite)."""
    with open(path, "rb") as f:
        f.seek(keep_until)
        tail_damaged = all(_row(line) is None for line in f)
    if tail_damaged:  # the usual case: a kill during a write left a partial last line
        with open(path, "rb+") as f:
            f.truncate(keep_until)
    else:
        bad = set(damaged)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            for number, (_, line) in enumerate(_lines(path), 1):
                if number not in bad:
                    out.write(line)
    shown = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
    warnings.warn(AstAudioWarning(
        f"{path}: dropped {len(damaged)} damaged line(s) (line {shown}: cut by a kill during a write, or not a JSON "
        "archive row); the files left without a line are done again"), stacklevel=3)


def _put_in_order(path: Path, mine: Sequence[str]) -> None:
    """Rewrite `path` atomically with one line per file of `mine`, in that order, each file's last line (a retried
    file's new line comes after its old error line)."""
    last: dict[str, tuple[int, int]] = {}
    for offset, line in _lines(path):
        row = _row(line)
        if row is not None:
            last[row["file"]] = (offset, len(line))
    missing = [name for name in mine if name not in last]
    if missing:
        raise ConfigError(f"{path}: no line for {missing[0]!r} ({len(missing)} file(s)); the output changed while "
                          "this run wrote it; run again with --resume")
    with open(path, "rb") as src, atomic_path(path) as tmp, open(tmp, "wb") as out:
        for name in mine:
            offset, size = last[name]
            src.seek(offset)
            out.write(src.read(size))


class _Decoded(torch.utils.data.Dataset):
    """Files -> (name, waveform or None, error), decoded in DataLoader workers."""

    def __init__(self, files: Sequence[str], sample_rate: int) -> None:
        self.files = list(files)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str]:
        name = self.files[index]
        try:
            return name, load_audio(name, sample_rate=self.sample_rate), ""
        except (AstAudioError, OSError) as exc:
            return name, None, one_line(exc)


def _append(f, rows: list[dict[str, Any]]) -> None:
    """One write of the batch's lines, then fsync: after a kill the file ends with whole batches, or a partial
    line that `--resume` drops."""
    f.write(b"".join(json_line(row) for row in rows))
    f.flush()
    os.fsync(f.fileno())


def run_archive(files: Sequence[str], output: str | os.PathLike, job: Job, *, sample_rate: int,
                batch_size: int = 8, workers: int = 0, resume: bool = False, shard: tuple[int, int] | None = None,
                retry_failed: bool = False, on_error: Callable[[str, str], None] | None = None,
                after_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run `job` over `files` (or part k of n of them with `shard=(k, n)`) into `output` (or its part file).

    Args:
        files: the whole list (every part is cut from the same list).
        output: the JSON-lines file; with `shard`, `<output>.part<k>-of-<n>` is written and, once every part is
            done, merged into `output` by the part that finishes last.
        job: see `Job`.
        sample_rate: the model's rate; files are decoded, downmixed and resampled to it in the workers.
        batch_size: files per job call and per appended write.
        workers: DataLoader worker processes decoding ahead of the model (0 = decode in this process).
        resume: continue `output` (skipping the files it has); without it an existing `output` is refused.
        retry_failed: continue `output` (as `resume`) and also do again the files whose line is an error line; their
            new lines replace the old ones, in the list's order.
        on_error: called as on_error(file, message) for a file that could not be decoded or scored.
        after_batch: called with the number of lines written so far (progress).

    Returns:
        {"output", "files" (this part's), "written", "skipped" (already done), "errors", "merged" (path or None)}.
    """
    k, n = shard if shard is not None else (0, 1)
    mine = share(files, k, n)
    target = part_path(output, k, n) if n > 1 else Path(output)
    resume = resume or retry_failed
    if target.exists() and not resume:
        raise ConfigError(f"{target} already exists; pass --resume to continue it or choose another --output")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)  # what a run killed in an atomic write (a merge, a marker) left
    if n > 1:
        _done_path(target).unlink(missing_ok=True)  # the part changes: not done until this run finishes it
    existing = _read_existing(target, mine) if resume else _Existing([], set())
    done = set(existing.files) - (existing.failed if retry_failed else set())
    todo = [f for f in mine if f not in done]
    # Lines already there, then todo's, give the list's order unless files were redone or lines dropped mid-file.
    in_order = existing.files + todo == mine
    loader = torch.utils.data.DataLoader(_Decoded(todo, sample_rate), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list, prefetch_factor=4 if workers else None)
    written = errors = 0
    with open(target, "ab") as f:
        for batch in loader:
            ordered = _run_batch(job, batch)
            for row in ordered:
                if "error" in row:
                    errors += 1
                    if on_error is not None:
                        on_error(row["file"], row["error"])
            _append(f, ordered)
            written += len(ordered)
            if after_batch is not None:
                after_batch(written)
            if os.environ.get(KILL_HOOK) == str(written):  # tests: a real SIGKILL at a chosen point
                os.kill(os.getpid(), signal.SIGKILL)
    if not in_order:
        _put_in_order(target, mine)
    merged = None
    if n > 1:
        marker = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "part": k, "parts": n, "files": len(mine),
                  "files_sha256": names_digest(mine), "list_files": len(files), "list_sha256": names_digest(files)}
        atomic_write_text(_done_path(target), json.dumps(marker) + "\n")
        if all(_done_path(part_path(output, j, n)).exists() for j in range(n)):
            merged = merge_parts(output, n)
    return {"output": str(target), "files": len(mine), "written": written, "skipped": len(mine) - len(todo),
            "errors": errors, "merged": str(merged) if merged else None}


def _run_batch(job: Job, batch: list[tuple[str, torch.Tensor | None, str]]) -> list[dict[str, Any]]:
    """One row per file of a decoded batch, in order: the job's for the decoded ones, an error row for the others."""
    rows: dict[int, dict[str, Any]] = {}
    good = [(i, name, wave) for i, (name, wave, _) in enumerate(batch) if wave is not None]
    for i, (name, wave, error) in enumerate(batch):
        if wave is None:
            rows[i] = {"file": name, "error": error}
    if good:
        try:
            results = job([name for _, name, _ in good], [wave for _, _, wave in good])
        except AstAudioError as exc:  # the whole batch failed (e.g. non-finite scores): each file says so
            results = [{"file": name, "error": one_line(exc)} for _, name, _ in good]
        for (i, _, _), row in zip(good, results, strict=True):
            rows[i] = row
    return [rows[i] for i in range(len(batch))]


def find_parts(output: str | os.PathLike) -> int:
    """N of the `<output>.part<k>-of-<N>` files next to `output` (ConfigError if there are none or several N)."""
    out = Path(output)
    counts = {p.name.rsplit("-of-", 1)[1].removesuffix(".done") for p in out.parent.glob(f"{out.name}.part*-of-*")}
    counts = {c for c in counts if c.isdigit()}
    if len(counts) != 1:
        raise ConfigError(f"{out}: expected the parts {out.name}.part<K>-of-<N> of one split next to it, found "
                          f"{'none' if not counts else 'splits into ' + ', '.join(sorted(counts))}")
    return int(counts.pop())


def _read_marker(done: Path, k: int, n: int) -> dict[str, Any]:
    try:
        marker = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{done}: unreadable part marker ({one_line(exc)}); {_again(k, n)}") from None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or \
            marker.get("version") != MARKER_VERSION:
        raise ConfigError(f"{done}: not a part marker of this version of ast-audio; {_again(k, n)}")
    return marker


def check_part(part: Path, k: int, n: int) -> dict[str, Any]:
    """Check part k of n against its `.done` marker: the part exists, has one whole line per file the marker
    counts, and its files, in order, are the ones the marker's digest records. Returns the marker; ConfigError
    saying what is wrong and what to do otherwise."""
    done = _done_path(part)
    again = _again(k, n)
    if not done.exists():
        raise ConfigError(f"{part}: part unfinished (no {done.name}); {again} before merging")
    marker = _read_marker(done, k, n)
    if not part.is_file():
        raise ConfigError(f"{done} marks part {k} of {n} done, but {part} is missing; {again}")
    names = []
    for number, (_, line) in enumerate(_lines(part), 1):
        row = _row(line)
        if row is None:
            raise ConfigError(f"{part}:{number}: damaged line (not a whole JSON archive row); {again}")
        names.append(row["file"])
    if len(names) != marker["files"]:
        raise ConfigError(f"{part}: {len(names)} line(s), but its marker counts {marker['files']} file(s) (lines "
                          f"were deleted or the file was cut); {again}")
    if names_digest(names) != marker["files_sha256"]:
        raise ConfigError(f"{part}: its files (or their order) differ from the ones its marker records (the part "
                          f"was edited); {again}")
    return marker


def merge_parts(output: str | os.PathLike, n: int | None = None) -> Path:
    """Merge the n complete parts of `output` into `output` (atomically), in the original list's order (round-robin
    over the parts). Every part is checked first (`check_part`), and all must come from the same list split the
    same way: a part missing, unfinished, edited or cut is refused in one line naming it and what to run."""
    out = Path(output)
    n = find_parts(out) if n is None else n
    parts = [part_path(out, k, n) for k in range(n)]
    unfinished = [str(p) for p in parts if not _done_path(p).exists()]
    if unfinished:
        raise ConfigError(f"{unfinished[0]}: part missing or unfinished ({len(unfinished)} of {n}); run it (again "
                          "with --resume) before merging")
    markers = [check_part(p, k, n) for k, p in enumerate(parts)]
    first = markers[0]
    for k, marker in enumerate(markers):
        total = marker["list_files"]
        if (marker["list_sha256"], total, marker["parts"]) != (first["list_sha256"], first["list_files"], n) or \
                marker["files"] != len(range(k, total, n)):
            raise ConfigError(f"{parts[k]}: cut from another list or split than {parts[0]} (each part must come from "
                              "the same --files-from and N); run the parts again with the same list")
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        live = [(line for _, line in _lines(p)) for p in parts]
        while live:  # one line of each part in turn: file i of the list is line i // n of part i % n
            still = []
            for stream in live:
                line = next(stream, None)
                if line is not None:
                    f.write(line)
                    still.append(stream)
            live = still
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Jobs of the commands (`embed` adopts the same shape)


def tag_job(tagger: Any, *, top_k: int = 10, window_s: float | None = None, hop_s: float | None = None,
            aggregate: str = "max", batch_size: int = 8, all_scores: bool = False,
            refine: Callable[[Any], None] | None = None, windowing: Windowing | None = None) -> Job:
    """`Tagger.tag` as a job: one `TagResult.to_dict` per file (`refine` rewrites a result's top labels first), or an
    error line for a file the tagger refuses (e.g. shorter than one frame). The windows: `windowing`, or built from
    window_s / hop_s (`tag_windowing`), once, before the first file is decoded."""
    windowing = resolve(tag_windowing, tagger.model, windowing, window_s, hop_s)

    def job(names: Sequence[str], waves: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        failed: dict[int, str] = {}
        results = iter(tagger.tag(list(waves), top_k=top_k, windowing=windowing, aggregate=aggregate,
                                  batch_size=batch_size, names=list(names), sample_rate=tagger.sample_rate,
                                  on_error=lambda i, exc: failed.__setitem__(i, one_line(exc))))
        rows = []
        for i, name in enumerate(names):
            if i in failed:
                rows.append({"file": name, "error": failed[i]})
                continue
            result = next(results)
            if refine is not None:
                refine(result)
            rows.append(result.to_dict(all_scores=all_scores))
        return rows

    return job


def events_job(pipeline: Any) -> Job:
    """Sound events as a job: `EventPipeline.run` on each decoded waveform (its defaults, rollup and energy from
    the same samples, as `ast-audio events` on one file), the `events --format json` document per file."""
    from .formats import events_document

    def job(names: Sequence[str], waves: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        rows = []
        for name, wave in zip(names, waves, strict=True):
            try:
                result = pipeline.run(wave, name=name, sample_rate=pipeline.tagger.sample_rate)
            except AstAudioError as exc:
                rows.append({"file": name, "error": one_line(exc)})
                continue
            rows.append(events_document(name, result.timeline, result.events))
        return rows

    return job
