"""Archives: run a per-file job over millions of files into one JSON-lines file, resumable and split over processes.

`run_archive(files, output, job)` decodes the files in DataLoader worker processes (so the model never waits on
I/O), hands each batch of decoded waveforms to `job` (tagging, events, later embeddings: any function from
(names, waveforms) to one JSON-ready dict per file) and appends the batch's lines to `output` with one write and an
fsync. A kill loses at most the batch being written: `--resume` (`resume=True`) drops a partial last line, reads the
files already in `output` and skips them, so a killed run resumed gives every file exactly once.

Splitting: `share(files, k, n)` is part k of n of the list, file i going to part i % n (balanced to within one file,
no I/O needed to decide it); part k writes `<output>.part<k>-of-<n>` and, when it is complete, a `.done` marker.
Whichever part finishes last merges the parts into `output` (`merge_parts`, also `ast-audio merge-parts`), in the
order of the original list: part i % n holds file i at line i // n, so the merge interleaves the parts round-robin
and equals a one-process run's file line for line.

A file that cannot be decoded or scored gets a line {"file": ..., "error": "<one line>"} (and the caller's
`on_error`, the CLI's stderr line); it counts as done, so `--resume` does not retry it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..audio.io import load_audio
from ..errors import AstAudioError, ConfigError
from ..utils import atomic_path, atomic_write_text, one_line

# Extensions taken from a folder given as the file list (what libsndfile decodes).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
                              ".w64", ".caf"})
# Test hook: the process kills itself with SIGKILL once this many lines are written (the resume tests).
KILL_HOOK = "AST_AUDIO_TEST_KILL_AFTER_LINES"
# A job: (names, waveforms (N_i,) at the model rate) -> one JSON-ready dict per file (with "file"), in order.
Job = Callable[[Sequence[str], Sequence[torch.Tensor]], list[dict[str, Any]]]


def list_files(source: str | os.PathLike) -> list[str]:
    """The files of `source`: a folder (audio files under it, recursively, sorted) or a text file with one path per
    line (blank lines and lines starting with # ignored; relative paths are relative to the list's folder)."""
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file list ({one_line(exc)}); expected a folder or a text file "
                          "with one audio path per line") from None
    files = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
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


def read_done(output: str | os.PathLike) -> set[str]:
    """The files that have a line in `output`; a partial last line (a kill during a write) is cut off the file."""
    path = Path(output)
    if not path.exists():
        return set()
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)  # the unfinished line of a killed write; its files are redone
    done = set()
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            done.add(json.loads(line)["file"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}:{number}: not a line of an ast-audio archive output; choose another --output"
                              ) from None
    return done


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
    line that `read_done` cuts off."""
    f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())
    f.flush()
    os.fsync(f.fileno())


def run_archive(files: Sequence[str], output: str | os.PathLike, job: Job, *, sample_rate: int,
                batch_size: int = 8, workers: int = 0, resume: bool = False, shard: tuple[int, int] | None = None,
                on_error: Callable[[str, str], None] | None = None,
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
        on_error: called as on_error(file, message) for a file that could not be decoded or scored.
        after_batch: called with the number of lines written so far (progress).

    Returns:
        {"output", "files" (this part's), "written", "skipped" (already done), "errors", "merged" (path or None)}.
    """
    k, n = shard if shard is not None else (0, 1)
    mine = share(files, k, n)
    target = part_path(output, k, n) if n > 1 else Path(output)
    if target.exists() and not resume:
        raise ConfigError(f"{target} already exists; pass --resume to continue it or choose another --output")
    done = read_done(target) if resume else set()
    todo = [f for f in mine if f not in done]
    target.parent.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(_Decoded(todo, sample_rate), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list, prefetch_factor=4 if workers else None)
    written = errors = 0
    with open(target, "ab") as f:
        for batch in loader:
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
            ordered = [rows[i] for i in range(len(batch))]
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
    merged = None
    if n > 1:
        atomic_write_text(_done_path(target), json.dumps({"files": len(mine)}) + "\n")
        if all(_done_path(part_path(output, j, n)).exists() for j in range(n)):
            merged = merge_parts(output, n)
    return {"output": str(target), "files": len(mine), "written": written, "skipped": len(mine) - len(todo),
            "errors": errors, "merged": str(merged) if merged else None}


def _part_lines(part: Path) -> Iterator[bytes]:
    with open(part, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield line


def find_parts(output: str | os.PathLike) -> int:
    """N of the `<output>.part<k>-of-<N>` files next to `output` (ConfigError if there are none or several N)."""
    out = Path(output)
    counts = {p.name.rsplit("-of-", 1)[1] for p in out.parent.glob(f"{out.name}.part*-of-*")
              if not p.name.endswith(".done") and p.name.rsplit("-of-", 1)[1].isdigit()}
    if len(counts) != 1:
        raise ConfigError(f"{out}: expected the parts {out.name}.part<K>-of-<N> of one split next to it, found "
                          f"{'none' if not counts else 'splits into ' + ', '.join(sorted(counts))}")
    return int(counts.pop())


def merge_parts(output: str | os.PathLike, n: int | None = None) -> Path:
    """Merge the n complete parts of `output` into `output` (atomically), in the original list's order (round-robin
    over the parts). Refuses while a part is missing or unfinished (no `.done` marker: resume that part first)."""
    out = Path(output)
    n = find_parts(out) if n is None else n
    parts = [part_path(out, k, n) for k in range(n)]
    unfinished = [str(p) for p in parts if not _done_path(p).exists()]
    if unfinished:
        raise ConfigError(f"{unfinished[0]}: part missing or unfinished ({len(unfinished)} of {n}); run it (again "
                          "with --resume) before merging")
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        live = [_part_lines(p) for p in parts]
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
            refine: Callable[[Any], None] | None = None) -> Job:
    """`Tagger.tag` as a job: one `TagResult.to_dict` per file (`refine` rewrites a result's top labels first), or an
    error line for a file the tagger refuses (e.g. shorter than one frame)."""
    tagger.window_and_hop(window_s, hop_s)  # options checked before the first file is decoded

    def job(names: Sequence[str], waves: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        failed: dict[int, str] = {}
        results = iter(tagger.tag(list(waves), top_k=top_k, window_s=window_s, hop_s=hop_s, aggregate=aggregate,
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
