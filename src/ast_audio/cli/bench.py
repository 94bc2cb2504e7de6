"""`ast-audio bench`: inference speed of each precision, auto's pick and the peer implementations in one run, or
(with `--accuracy`) the accuracy of each precision against fp32. The work is in ast_audio.bench."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..model.names import PRECISION_CHOICES
from .args import add_option, non_negative_float, positive_int

# ast_audio.bench.speed's defaults, repeated so that --help needs no torch (tests/test_bench_cli.py checks them).
DEFAULT_BATCH = 4
DEFAULT_REPEATS = 2
PRECISIONS_DEFAULT = tuple(p for p in PRECISION_CHOICES if p != "auto")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `bench` to `commands`."""
    bench = commands.add_parser(
        "bench", help="measure inference speed (every precision, auto's pick, the peers) or fast-path accuracy",
        description="Time ast-audio's AST in each precision (batch-1 latency, batch-B throughput) and the peer paths "
        "on the same weights (transformers fp32/bf16, transformers' own ONNX export in ONNX Runtime fp32/int8), "
        "all interleaved in one run; print this CPU's capability, what --precision auto picks, the speed-ups over "
        "the fastest peer, the fraction of the measured matmul peak and the real-time factor of tagging an hour "
        "of audio. Paths this CPU would emulate (bf16 without AVX512-BF16/AMX) are skipped with the reason. "
        "With --accuracy, train a small model on generated clips and report each precision's agreement with fp32.")
    bench.add_argument("--checkpoint", metavar="C",
                       help="checkpoint folder, .pth file or hub id (default: random AST-base384 weights)")
    bench.add_argument("--precisions", default=",".join(PRECISIONS_DEFAULT), metavar="LIST",
                       help=f"comma-separated precisions to time; auto's pick is always included (default "
                            f"{','.join(PRECISIONS_DEFAULT)})")
    bench.add_argument("--compare", choices=("transformers", "none"), default="transformers",
                       help="time the peers on the same weights (default; skipped if transformers is missing)")
    bench.add_argument("--compile", action="store_true", help="also time torch.compile'd torch precisions")
    add_option(bench, "--batch-size", type=positive_int, default=DEFAULT_BATCH, deprecated=("--batch",),
               help=f"batch size for throughput (default {DEFAULT_BATCH})")
    bench.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                       help=f"timed interleaved rounds (default {DEFAULT_REPEATS})")
    bench.add_argument("--seconds", type=non_negative_float, default=60.0, metavar="S",
                       help="generated audio for auto's real-time factor, in seconds (default 60; 0 skips it)")
    bench.add_argument("--threads", type=positive_int,
                       help="torch intra-op threads for timing (default: one per core); --accuracy always trains "
                            "and runs on the demo's fixed thread count, so its report does not depend on the load")
    bench.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peaks")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON (atomically)")
    bench.add_argument("--students", action="store_true", help="also time the distillation students tiny/mini/small "
                       "(random weights; on the model's mel bins and on 64) beside the model in "
                       "--students-precision (s/clip, GFLOP per 10 s, speed-up)")
    bench.add_argument("--students-precision", default="auto", choices=PRECISION_CHOICES, metavar="P",
                       help="precision of the --students table (default auto)")
    bench.add_argument("--accuracy", action="store_true",
                       help="report the precisions' accuracy on generated clips instead of timing")
    bench.add_argument("--train-epochs", type=positive_int, default=40, metavar="N",
                       help="--accuracy: training epochs of the small model (default 40, as the demo)")
    bench.add_argument("--test-per-class", type=positive_int, default=100, metavar="N",
                       help="--accuracy: held-out generated clips per class (default 100)")
    bench.set_defaults(func=cmd_bench)


def _speed_report(args: argparse.Namespace, precisions: list, log: Any) -> tuple[str, dict]:
    """The speed bench (and the students beside the base model with --students): text and JSON."""
    from ..bench.speed import format_bench, format_students, random_base_model, run_bench, student_speeds
    from ..weights.checkpoint import load_model

    model = load_model(args.checkpoint) if args.checkpoint else None
    result = run_bench(model, precisions=precisions, compare=args.compare == "transformers",
                       batch=args.batch_size, repeats=args.repeats, seconds=args.seconds, compile=args.compile,
                       peaks=not args.no_peak, log=log)
    text, data = format_bench(result), result.to_dict()
    if args.students:
        rows = student_speeds(model or random_base_model(), batch=args.batch_size, repeats=args.repeats,
                              precision=args.students_precision)
        text, data = text + "\n" + format_students(rows), {**data, "students": rows}
    return text, data


def cmd_bench(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..bench.accuracy import accuracy_report, format_accuracy
    from ..model.precision import parse_precisions
    from ..utils import atomic_write_text

    precisions = parse_precisions(args.precisions)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.accuracy:
        report = accuracy_report(epochs=args.train_epochs, test_per_class=args.test_per_class,
                                 precisions=precisions, log=log)
        text, data = format_accuracy(report), report.to_dict()
    else:
        text, data = _speed_report(args, precisions, log)
    sys.stdout.write(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
    return 0
