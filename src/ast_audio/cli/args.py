"""Sub-commands of `ast-audio` that live beside their library code.

Each module named in `COMMAND_MODULES` has `register(commands)`, which adds its sub-parsers to the argparse
sub-parser group and sets `func` on each. A `func(args) -> int` raises AstAudioError (or OSError) for user
errors; `ast_audio.cli.main` prints those as one line and exits 1. Keep heavy imports (torch models,
matplotlib, fastapi, onnx) inside the `func`s so `ast-audio --help` stays fast.
"""

from __future__ import annotations

import argparse

COMMAND_MODULES = (
    "ast_audio.cli.train",  # train, eval, average
    "ast_audio.cli.data",  # prepare, stats
    "ast_audio.cli.events",  # events, calibrate, explain
    "ast_audio.cli.serve",  # serve
    "ast_audio.cli.export",  # export
    "ast_audio.cli.bench",  # bench
)

DEFAULT_CHECKPOINT = "MIT/ast-finetuned-audioset-10-10-0.4593"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (seconds, rates, ...)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (thresholds, probabilities)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def add_checkpoint_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--checkpoint`: native folder, reference .pth, transformers folder or hub id."""
    if required:
        parser.add_argument("--checkpoint", required=True,
                            help="checkpoint folder, .pth file or hub id")
    else:
        parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                            help=f"checkpoint folder, .pth file or hub id (default: {DEFAULT_CHECKPOINT})")


PRECISION_HELP = ("auto (the fastest measured path for this CPU: bf16 with AMX, ONNX Runtime int8 on other x86, fp32 "
                  "elsewhere; --verbose says which and why), fp32 (faithful), bf16, int8, ort-fp32 or ort-int8; see "
                  "docs/speed.md")


def add_precision_arg(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    """`--precision`: checked by the library (one-line error listing the choices), so every command says the same."""
    parser.add_argument("--precision", default=default, metavar="P", help=f"{PRECISION_HELP} (default {default})")


def load_for_inference(checkpoint: str, precision: str = "fp32", *, labels: str | None = None,
                       torch_only: bool = False, verbose: bool = False):
    """load_model for the inference commands: `precision` resolved for this machine (`torch_only`: explanations,
    which need the torch model), and with `verbose` one stderr line saying what runs and why."""
    import sys

    from ..model.precision import choose_precision
    from ..weights.checkpoint import load_model

    choice = choose_precision(precision, torch_only=torch_only)
    model = load_model(checkpoint, precision=choice, **({"labels": labels} if labels else {}))
    if verbose:
        print(f"ast-audio: {choice.describe()}", file=sys.stderr)
    return model
