"""`ast-audio export CHECKPOINT OUT.onnx`: an ONNX graph of a checkpoint, checked against the eager model."""

from __future__ import annotations

import argparse

from .args import add_positional_output, require_output


def register(commands: argparse._SubParsersAction) -> None:
    """Add this module's sub-parsers to `commands`."""
    export = commands.add_parser(
        "export", help="export a checkpoint to ONNX (optionally int8, optionally with the fbank front end inside)",
        description="Write an ONNX graph with a dynamic batch axis that onnxruntime runs, then check it against the "
        "eager model on generated inputs and print the max logit difference. Labels and configs are stored in the "
        "graph's metadata, so `ast-audio tag --onnx OUT.onnx` needs nothing else.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder, .pth file or hub id")
    add_positional_output(export, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="fp32 (default) or int8 (onnxruntime dynamic quantization of the linear layers)")
    export.add_argument("--with-frontend", action="store_true",
                        help="the graph takes raw 16 kHz waveforms (batch, samples) and computes the Kaldi fbank, "
                        "pad/crop and normalisation itself (default: it takes the normalised fbank)")
    export.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default 18, at least 17)")
    export.add_argument("--labels", metavar="CSV", help="class-label CSV overriding the checkpoint's label names")
    export.add_argument("--no-check", action="store_true", help="skip the parity check against the eager model")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export, check parity, print one summary line."""
    from pathlib import Path

    from ..errors import ExportError
    from ..export.onnx import check_output_path, export_onnx
    from ..weights.checkpoint import load_model

    out = require_output(args, "OUT.onnx")
    check_output_path(Path(out), args.force)  # before spending time loading the checkpoint
    if args.opset is not None and args.opset < 17:
        raise ExportError(f"opset {args.opset} is too old: the graph needs ONNX opset 17 or newer "
                          "(LayerNormalization); use --opset 18")
    model = load_model(args.checkpoint, labels=args.labels)
    report = export_onnx(model, out, precision=args.precision, with_frontend=args.with_frontend,
                         opset=args.opset, check=not args.no_check, force=args.force)
    print(report.summary())
    return 0
