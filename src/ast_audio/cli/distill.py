"""`ast-audio distill logits`: a teacher's outputs on K augmented views of every clip, stored once (a thin shell over
ast_audio.train.distill.extract_logits); the student trains with `ast-audio train --recipe distill`.

Examples:
    ast-audio distill logits --teacher runs/big/model --data my_recordings/ --views 10 --top-k 20 -o logits/
    ast-audio distill logits --teacher a/model,b/model --data list.txt --shard 0/4 -o logits/   # part 0 of 4
    ast-audio train --recipe distill --logits logits/ --student mini -o runs/student
"""

from __future__ import annotations

import argparse
import sys

from .args import add_device_arg, add_output_arg, add_progress_arg, positive_int, progress_for, require_output


def cmd_logits(args: argparse.Namespace) -> int:
    """Store the teacher's top-k probabilities (and frame scores) on --views views of every clip of --data."""
    import shutil
    from pathlib import Path

    from ..errors import ConfigError
    from ..infer.archive import parse_shard, torchrun_shard
    from ..train.distill import extract_logits
    from ..train.logits import INDEX_NAME, chunk_files, done_path
    from .args import inference_device, report_file_error

    out = Path(require_output(args, "DIR"))
    if args.resume and args.force:
        raise ConfigError("--resume continues -o/--output and --force replaces it: pass one of them")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {args.num_workers}")
    shard = parse_shard(args.shard) if args.shard else torchrun_shard()
    if args.force and (out / INDEX_NAME).is_file():  # only a logits folder is replaced (it has the index)
        if shard is None:
            shutil.rmtree(out)
        else:  # this part only: the other parts may be running
            for path in [*chunk_files(out, shard), done_path(out, *shard)]:
                path.unlink(missing_ok=True)
    teachers = [t for t in args.teacher.split(",") if t]
    with progress_for(args, "logits", "clips") as progress:
        summary = extract_logits(teachers, args.data, out, views=args.views, top_k=args.top_k, seed=args.seed,
                                 shard=shard, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                 workers=args.num_workers,
                                 resume=args.resume, device=inference_device(args.device), progress=progress,
                                 on_error=lambda message: report_file_error(str(args.data), Exception(message)))
    part = f" (part {shard[0]} of {shard[1]})" if shard else ""
    print(f"ast-audio: {summary['written']} clips x {args.views} views written to {out}{part}, {summary['skipped']} "
          f"already there, {summary['errors']} unreadable; {summary['bytes']} bytes"
          f"{'; every part done' if summary['complete'] else ''}", file=sys.stderr)
    return 1 if summary["errors"] else 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add distill (with its sub-command logits)."""
    distill = commands.add_parser("distill", help="distil a big AST (or an ensemble) into a small student: store "
                                  "the teacher's outputs once (then `train --recipe distill`)",
                                  description="Distillation as CED does it (docs/training.md): the teacher's top-k "
                                  "probabilities on K augmented views of every clip, each with the seed that "
                                  "regenerates the view, stored once; `ast-audio train --recipe distill --logits DIR "
                                  "--student tiny|mini|small|JSON` trains a student on them.")
    steps = distill.add_subparsers(dest="step", metavar="STEP", required=True)
    logits = steps.add_parser("logits", help="store a teacher's outputs on K views of every clip",
                              description="Run the teacher (one checkpoint or an ensemble: the mean of the members' "
                              "probabilities) on --views augmented views of every clip of --data and store the top-k "
                              "probabilities, the views' seeds and, for a frame teacher, its frame scores in DIR "
                              "(sharded .npz files and index.json). Resumable (--resume) and splittable (--shard).")
    logits.add_argument("--teacher", required=True, metavar="CKPT[,CKPT...]",
                        help="checkpoint folder, file or hub id; several (comma-separated) make an ensemble")
    logits.add_argument("--data", required=True, metavar="PATH", help="a folder of audio (recursively), a text file "
                        "with one audio path per line, or a folder of tar shards (`ast-audio prepare`); labels are "
                        "not needed")
    logits.add_argument("--views", type=positive_int, default=10, metavar="K", help="augmented views per clip "
                        "(default 10; view 0 is the clip as it is; CED uses 40 on AudioSet)")
    logits.add_argument("--top-k", type=positive_int, default=20, metavar="K", help="probabilities stored per view "
                        "(default 20, as CED; the other classes are filled with min(top-k) / (classes - k))")
    logits.add_argument("--seed", type=int, default=0, help="base seed of the views (default 0)")
    logits.add_argument("--batch-size", type=positive_int, default=8, help="clips per teacher batch (x --views "
                        "inputs; default 8)")
    logits.add_argument("--chunk-size", type=positive_int, default=256, metavar="CLIPS", help="clips per chunk file "
                        "(default 256; a kill loses at most one chunk's work)")
    logits.add_argument("--num-workers", type=int, default=2, metavar="N", help="DataLoader processes decoding and "
                        "augmenting ahead of the teacher (default 2; 0 = in this process)")
    logits.add_argument("--resume", action="store_true", help="continue DIR: skip the clips it already holds")
    logits.add_argument("--shard", metavar="K/N", help="store part K of N of the clips (0 <= K < N) into the same DIR "
                        "(default under torchrun: RANK/WORLD_SIZE)")
    add_device_arg(logits)
    add_output_arg(logits, metavar="DIR", required=True, help="the logits folder")
    add_progress_arg(logits)
    logits.set_defaults(func=cmd_logits)
