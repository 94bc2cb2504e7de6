"""`ast-audio bench`: inference speed of each precision, the ONNX graph and transformers in one run, or (with
`--accuracy`) the accuracy of each fast path against fp32. The work is in ast_audio.bench."""

from __future__ import annotations

import argparse
import json

from . import positive_int


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add `bench` to `commands`."""
    bench = commands.add_parser(
        "bench", help="measure inference speed (each precision, ONNX, transformers) or fast-path accuracy",
        description="Time ast-audio's AST in each precision (batch-1 latency, batch-B throughput), optionally its "
        "ONNX export, and transformers' AST on the same weights, all interleaved in one run; print the ratios, the "
        "fraction of the measured matmul peak and the real-time factor of tagging an hour of audio. With --accuracy, "
        "train a small model on generated clips and report each fast path's agreement with fp32 instead.")
    bench.add_argument("--checkpoint", metavar="C",
                       help="checkpoint folder, .pth file or hub id (default: random AST-base384 weights)")
    bench.add_argument("--precisions", default="fp32,bf16,int8", metavar="LIST",
                       help="comma-separated precisions to time (default fp32,bf16,int8)")
    bench.add_argument("--onnx", action="store_true", help="also export and time fp32 and int8 ONNX graphs")
    bench.add_argument("--compare", choices=("transformers", "none"), default="transformers",
                       help="time transformers' AST on the same weights (default; skipped if not installed)")
    bench.add_argument("--compile", action="store_true", help="also time torch.compile'd versions")
    bench.add_argument("--batch", type=positive_int, default=8, help="batch size for throughput (default 8)")
    bench.add_argument("--repeats", type=positive_int, default=3, help="timed interleaved rounds (default 3)")
    bench.add_argument("--seconds", type=_non_negative_float, default=60.0, metavar="S",
                       help="generated audio for the real-time factor, in seconds (default 60; 0 skips it)")
    bench.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: one per core)")
    bench.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peaks")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON (atomically)")
    bench.add_argument("--accuracy", action="store_true",
                       help="report the fast paths' accuracy on generated clips instead of timing")
    bench.add_argument("--train-epochs", type=positive_int, default=40, metavar="N",
                       help="--accuracy: training epochs of the small model (default 40, as the demo)")
    bench.add_argument("--test-per-class", type=positive_int, default=100, metavar="N",
                       help="--accuracy: held-out generated clips per class (default 100)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..bench import accuracy_report, format_accuracy, format_bench, run_bench
    from ..precision import parse_precisions
    from ..utils import atomic_write_text

    precisions = parse_precisions(args.precisions)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.accuracy:
        report = accuracy_report(epochs=args.train_epochs, test_per_class=args.test_per_class,
                                 precisions=precisions, onnx=args.onnx, log=log)
        text, data = format_accuracy(report), report.to_dict()
    else:
        model = None
        if args.checkpoint:
            from ..weights.checkpoint import load_model

            model = load_model(args.checkpoint)
        result = run_bench(model, precisions=precisions, onnx=args.onnx, compare=args.compare == "transformers",
                           batch=args.batch, repeats=args.repeats, seconds=args.seconds, compile=args.compile,
                           peaks=not args.no_peak, log=log)
        text, data = format_bench(result), result.to_dict()
    sys.stdout.write(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
    return 0
