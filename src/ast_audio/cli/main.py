"""`ast-audio` command line: thin shells over the library (tag, convert, demo here; the rest in ast_audio.commands).

Exit status: 0 success; 1 a user error, printed as one line `ast-audio: error: <message>` (add `--debug` for the
traceback); 2 a usage error (argparse); 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import AstAudioError, AstAudioWarning
from ..utils import one_line
from .args import COMMAND_MODULES, DEFAULT_CHECKPOINT, add_precision_arg, load_for_inference
from .args import positive_float as _positive_float
from .args import positive_int as _positive_int

PROG = "ast-audio"
_PYTHON_SHOWWARNING = warnings.showwarning


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command (kept apart from `main` so it can be inspected and tested)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Audio Spectrogram Transformer: tag audio, convert "
                                     "checkpoints, run the offline demo.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="say what runs and why (the precision auto picked, one-off graph builds)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tag = commands.add_parser("tag", help="tag audio files with an AST checkpoint",
                              description="Tag audio files. Audio longer than the model's input is scored with "
                              "overlapping sliding windows and aggregated (nothing is truncated).")
    tag.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    tag.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                     help=f"checkpoint folder, .pth file or hub id (default: {DEFAULT_CHECKPOINT})")
    tag.add_argument("--labels", metavar="CSV", help="class-label CSV overriding the checkpoint's label names")
    tag.add_argument("--top-k", type=_positive_int, default=10, help="labels shown per clip/window (default 10)")
    tag.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    tag.add_argument("--window", type=_positive_float, metavar="S",
                     help="sliding-window length in seconds (default: the model's input length)")
    tag.add_argument("--hop", type=_positive_float, metavar="S",
                     help="seconds between window starts (default: half the window)")
    tag.add_argument("--aggregate", choices=("max", "mean"), default="max",
                     help="clip score from window scores (default max)")
    tag.add_argument("--batch-size", type=_positive_int, default=8, help="windows per forward pass (default 8)")
    tag.add_argument("--all-scores", action="store_true", help="json: include every class's clip score")
    tag.add_argument("--output", "-o", metavar="PATH", help="write the result here (atomically) instead of stdout")
    tag.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate`: report "
                     "every listed class whose score reaches its threshold (instead of the top-k)")
    tag.add_argument("--only", action="append", metavar="NAMES", help="report only these classes (comma-separated)")
    tag.add_argument("--exclude", action="append", metavar="NAMES", help="never report these classes")
    tag.add_argument("--onnx", metavar="OUT.onnx", help="run this graph from `ast-audio export` with onnxruntime "
                     "instead of a checkpoint (labels and front end come from the graph)")
    add_precision_arg(tag)
    tag.set_defaults(func=cmd_tag)

    convert = commands.add_parser("convert", help="convert a checkpoint to the native or transformers format")
    convert.add_argument("source", metavar="SRC", help="checkpoint folder, .pth file or hub id")
    convert.add_argument("out", metavar="OUT", help="output folder")
    convert.add_argument("--format", choices=("native", "hf"), required=True,
                         help="native: model.safetensors + config.json; hf: a transformers AST folder")
    convert.add_argument("--labels", metavar="CSV", help="class-label CSV to store with the model")
    convert.add_argument("--force", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(func=cmd_convert)

    demo = commands.add_parser("demo", help="offline demo: generate audio, train a small AST, evaluate, tag")
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default ./demo-output)")
    demo.add_argument("--seconds-budget", type=_positive_float, default=90.0, metavar="S",
                      help="training time budget in seconds (default 90)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    for sub in commands.choices.values():  # `--verbose` also after the command; SUPPRESS keeps a global one
        sub.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _format_table(results) -> str:
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


def _format_csv(results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "rank", "label", "score"])
    for r in results:
        for rank, (label, score) in enumerate(r.top, 1):
            writer.writerow([r.name, rank, label, f"{score:.6g}"])
    return buffer.getvalue()


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from ..utils import atomic_write_text

        atomic_write_text(output, text)


def cmd_tag(args: argparse.Namespace) -> int:
    """Tag FILE...: bad files are reported one per line on stderr, the rest are still tagged; 1 if any failed."""
    from ..infer.tagger import Tagger

    if getattr(args, "onnx", None):
        from ..export.onnx import load_onnx_tagger

        if args.precision != "fp32":
            raise AstAudioError("--precision applies to checkpoints; an ONNX graph's precision is chosen when it is "
                                "exported (`ast-audio export --precision int8`)")
        tagger = load_onnx_tagger(args.onnx, labels=args.labels)
    else:
        tagger = Tagger(load_for_inference(args.checkpoint, args.precision, labels=args.labels, verbose=args.verbose))
    # Check the options before spending time decoding files.
    tagger.window_and_hop(args.window, args.hop)
    from .events import tag_label_filter

    refine = tag_label_filter(args, tagger.labels)  # --thresholds/--only/--exclude, names checked up front
    failed = 0

    def report(index: int, exc: AstAudioError) -> None:  # a bad file: one line, the others are still tagged
        nonlocal failed
        if args.debug:
            raise exc
        path, message = args.files[index], one_line(exc)
        prefix = f"{path}: "
        print(f"{PROG}: {message if message.startswith(prefix) else prefix + message}", file=sys.stderr)
        failed += 1

    # Files are streamed block by block (memory bounded by one batch of windows, whatever their length).
    results = tagger.tag(args.files, top_k=args.top_k, window_s=args.window, hop_s=args.hop,
                         aggregate=args.aggregate, batch_size=args.batch_size, on_error=report)
    for result in results:
        refine(result)
    if args.format == "json":
        text = json.dumps([r.to_dict(all_scores=args.all_scores) for r in results], indent=2) + "\n"
    elif args.format == "csv":
        text = _format_csv(results)
    else:
        text = _format_table(results)
    _emit(text, args.output)
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert SRC to OUT in the native or transformers format; refuses to replace OUT without --force."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise AstAudioError(f"{out} already exists; choose another output or pass --force to replace it")
    from ..weights.checkpoint import load_model, save_hf, save_model

    model = load_model(args.source, **({"labels": args.labels} if args.labels else {}))

    (save_hf if args.format == "hf" else save_model)(model, out)
    print(f"wrote {args.format} checkpoint to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate data, train, evaluate, save and tag: see ast_audio.demo.run_demo."""
    from ..demo import run_demo

    run_demo(args.out, seconds_budget=args.seconds_budget, seed=args.seed)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: ast-audio's own warnings as one stderr line, others as Python shows them."""
    if issubclass(category, AstAudioWarning):
        print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def _report_in_one_line(verbose: bool) -> None:
    """ast-audio's warnings (AstAudioWarning) and, with --verbose, its log messages reach stderr as one line each,
    prefixed like the errors."""
    import logging

    warnings.showwarning = _show_warning
    warnings.simplefilter("default", AstAudioWarning)  # once per message and place
    logger = logging.getLogger("ast_audio")
    if verbose and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ast-audio` script and `python -m ast_audio`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    _report_in_one_line(verbose=args.verbose)
    try:
        if isinstance(getattr(args, "precision", None), str):  # every command refuses a bad one alike, up front
            from ..model.precision import check_precision

            check_precision(args.precision)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (AstAudioError, OSError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
