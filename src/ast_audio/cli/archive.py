"""Archive mode of `tag` and `events` (--files-from, --resume, --shard, --num-workers) and `ast-audio merge-parts`:
thin shells over ast_audio.infer.archive."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .args import add_option, positive_int, report_file_error


def add_archive_args(parser: argparse.ArgumentParser) -> None:
    """The archive options shared by `tag` and `events` (and later `embed`)."""
    group = parser.add_argument_group("archives", "tag a list or folder of files into a JSON-lines --output, "
                                      "resumable and splittable (docs/scale.md)")
    group.add_argument("--files-from", metavar="LIST", help="a text file with one audio path per line, or a folder "
                       "(audio files under it, recursively); writes one JSON line per file to --output")
    group.add_argument("--resume", action="store_true", help="continue --output: skip the files it already has "
                       "(without --resume or --force an existing --output is refused)")
    group.add_argument("--retry-failed", action="store_true", help="continue --output (as --resume) and do again "
                       "the files whose line is an error; their new lines replace the old ones (with --shard: run "
                       "it for each part, the last one merges again)")
    group.add_argument("--shard", metavar="K/N", help="process part K of N (0 <= K < N) into OUTPUT.partK-of-N; "
                       "the last part to finish merges them (default under torchrun: RANK/WORLD_SIZE)")
    add_option(group, "--num-workers", type=int, default=2, metavar="N", deprecated=("--workers",),
                       help="DataLoader processes decoding ahead of the model (default 2; 0 = in this process)")


# Options of `tag` / `events` that write something besides the one JSON line per file, which archive mode does not:
# (attribute, option). They are refused there instead of being ignored.
_NOT_IN_ARCHIVES = (("plot", "--plot"), ("plot_truth", "--plot-truth"), ("scores_dir", "--scores-dir"),
                    ("durations", "--durations"))
# Archive mode writes JSON lines: --format may be json, or left at the command's default (table for tag).
_ARCHIVE_FORMATS = ("json", "table")


def archive_mode(args: argparse.Namespace) -> bool:
    """True if the command runs over --files-from; checks the options that go with it."""
    from ..errors import ConfigError

    if args.files_from is None:
        if args.files == []:
            raise ConfigError("give audio files, or --files-from LIST (a file list or a folder) with --output")
        if args.resume or args.shard or args.retry_failed:
            raise ConfigError("--resume, --retry-failed and --shard go with --files-from")
        return False
    given = [option for attribute, option in _NOT_IN_ARCHIVES if getattr(args, attribute, None)]
    if getattr(args, "format", "json") not in _ARCHIVE_FORMATS:
        given.insert(0, f"--format {args.format}")
    if given:
        raise ConfigError(f"{given[0]} does not apply to --files-from, which writes one JSON line per file to "
                          "--output (the `--format json` object); leave it out, or run the command on the files "
                          "themselves for it")
    if args.files:
        raise ConfigError("give either audio files or --files-from, not both")
    if not args.output:
        raise ConfigError("--files-from needs --output OUT.jsonl (one JSON line per file)")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if args.resume and args.force:
        raise ConfigError("--resume continues --output and --force replaces it: pass one of them")
    return True


def run_archive_command(args: argparse.Namespace, job: Any, sample_rate: int) -> int:
    """Run `job` over --files-from into --output; bad files get an error line and one stderr line each; exit 1 if
    any failed."""
    from pathlib import Path

    from ..infer.archive import list_files, parse_shard, part_path, run_archive, torchrun_shard
    from ..utils import one_line

    files = list_files(args.files_from)
    shard = parse_shard(args.shard) if args.shard else torchrun_shard()
    if args.force:  # the overwrite rule: --force replaces this run's output (or this part) instead of refusing it
        target = part_path(args.output, *shard) if shard and shard[1] > 1 else Path(args.output)
        target.unlink(missing_ok=True)

    def report(path: str, message: str) -> None:
        report_file_error(path, Exception(message))

    summary = run_archive(files, args.output, job, sample_rate=sample_rate, batch_size=args.batch_size,
                          workers=args.num_workers, resume=args.resume, shard=shard, retry_failed=args.retry_failed,
                          on_error=report)
    part = f" (part {shard[0]} of {shard[1]})" if shard else ""
    merged = f"; all parts done, merged into {summary['merged']}" if summary["merged"] else ""
    print(one_line(f"ast-audio: {summary['written']} files written to {summary['output']}{part}, "
                   f"{summary['skipped']} already there, {summary['errors']} errors{merged}"), file=sys.stderr)
    return 1 if summary["errors"] else 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add merge-parts."""
    merge = commands.add_parser("merge-parts", help="merge OUT.partK-of-N files of `tag/events --shard` into OUT",
                                description="Merge the complete parts of an archive run into one JSON-lines file, "
                                "in the order of the original list (the last part to finish does this itself).")
    merge.add_argument("output", metavar="OUT", help="the --output the parts were written for")
    merge.add_argument("--parts", type=positive_int, metavar="N", help="number of parts (default: found next to OUT)")
    merge.set_defaults(func=cmd_merge_parts)


def cmd_merge_parts(args: argparse.Namespace) -> int:
    from ..infer.archive import merge_parts

    out = merge_parts(args.output, args.parts)
    print(f"ast-audio: merged into {out}", file=sys.stderr)
    return 0
