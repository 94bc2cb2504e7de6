"""Argument helpers shared by every `ast-audio` command: one number validator factory, and the checkpoint, precision
and data-set arguments defined once.

Nothing here (or in any cli module at import time) imports torch: `ast-audio --help` and `ast-audio COMMAND --help`
only build parsers. Heavy imports (models, matplotlib, fastapi, onnx) happen inside the commands' functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..config import OPTION_RANGES, NumberRange
from ..errors import ConfigError
from ..train.layouts import LAYOUTS
from ..weights.hub import DEFAULT_MODEL

DEFAULT_CHECKPOINT = DEFAULT_MODEL
# ast_audio.model.precision.PRECISION_CHOICES, repeated so that --help needs no torch; tests/test_architecture.py
# checks that the two are equal.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "int8", "ort-fp32", "ort-int8")
PRECISION_HELP = ("auto (the fastest measured path for this CPU: bf16 with AMX, ONNX Runtime int8 on other x86, fp32 "
                  "elsewhere; --verbose says which and why), fp32 (faithful), bf16, int8, ort-fp32 or ort-int8; see "
                  "docs/speed.md")


def number(kind: type = float, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           odd: bool = False, what: str | None = None) -> Callable[[str], Any]:
    """An argparse `type`: the text as a finite `kind` (int or float) in [low, high] ((low, high] with `low_open`),
    odd if `odd`; otherwise argparse's usage error "expected <what>, got <text>". The CLI's one number validator,
    checking with `ast_audio.config.NumberRange` as the HTTP form and the WebSocket do."""
    return range_type(NumberRange(kind, low=low, high=high, low_open=low_open, odd=odd, what=what))


def range_type(bounds: NumberRange) -> Callable[[str], Any]:
    """An argparse `type` accepting what `bounds` accepts."""
    def parse(text: str) -> Any:
        try:
            return bounds.parse("value", text)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"expected {bounds.describe()}, got {text!r}") from None

    return parse


def option_type(name: str) -> Callable[[str], Any]:
    """An argparse `type` for the run-time option `name` of `ast_audio.config.OPTION_RANGES` (median, rate, ...):
    the same range as the server's form field and WebSocket field of that name."""
    return range_type(OPTION_RANGES[name])


positive_int = number(int, low=1)
positive_float = number(float, low=0, low_open=True)
non_negative_float = number(float, low=0)
unit_float = number(float, low=0, high=1, what="a number between 0 and 1")


def add_checkpoint_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--checkpoint`: native folder, reference .pth, transformers folder or hub id."""
    if required:
        parser.add_argument("--checkpoint", required=True, help="checkpoint folder, .pth file or hub id")
    else:
        parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                            help=f"checkpoint folder, .pth file or hub id (default: {DEFAULT_CHECKPOINT})")


def add_precision_arg(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    """`--precision`: checked by the library (one-line error listing the choices), so every command says the same."""
    parser.add_argument("--precision", default=default, metavar="P", help=f"{PRECISION_HELP} (default {default})")


ONLY_HELP = ("only these classes: comma-separated names, repeatable (names that contain commas, e.g. 'Male speech, "
             "man speaking', are recognised whole). With AudioSet labels also ontology names in any case or ids "
             "(/m/04rlf), each meaning the class and every class below it ('Music', 'Vehicle'); `ast-audio labels` "
             "lists them")
ROLLUP_HELP = ("AudioSet models: also report the parent classes of the ontology ('Music', 'Vehicle', 'Human voice'), "
               "each scored as the max of itself and every class below it (docs/labels.md)")


def add_class_filter_args(parser: argparse.ArgumentParser, *, rollup: bool = True) -> None:
    """--only / --exclude (checked by `ast_audio.labels.selected_classes`) and, with `rollup`, --rollup."""
    parser.add_argument("--only", action="append", metavar="NAMES", help=ONLY_HELP)
    parser.add_argument("--exclude", action="append", metavar="NAMES", help="drop these classes (as --only)")
    if rollup:
        parser.add_argument("--rollup", action="store_true", help=ROLLUP_HELP)


DATA_HELP = ("audioset: train JSON datafile; esc50 / speechcommands: the release folder; folder: a directory of "
             "class sub-folders or a CSV (path,label[;label]) / JSON manifest")


def add_data_args(parser: argparse.ArgumentParser, *, layout: str | None = "required", shards: bool = False,
                  data_required: bool = True) -> None:
    """The data-set arguments, as `ast_audio.train.layouts.load_splits` takes them: --layout, --data, --eval-data,
    --label-csv, --fold.

    Args:
        layout: "required", "optional" (no default; the command checks), a default layout, or None for no
            --layout option (`train`: the recipe says).
        shards: --data may also be a folder written by `ast-audio prepare`.
        data_required: whether --data is required (calibrate: not with --truth, which names its own files).
    """
    if layout is not None:
        kwargs: dict[str, Any] = ({"required": True} if layout == "required" else {} if layout == "optional"
                                  else {"default": layout})
        default = f" (default {layout})" if "default" in kwargs else ""
        parser.add_argument("--layout", choices=LAYOUTS, **kwargs,
                            help=f"data layout: audioset (JSON datafile), esc50 (release root), speechcommands "
                                 f"(release root), folder (class sub-folders or a CSV/JSON manifest){default}")
    where = "; or a folder written by `ast-audio prepare`" if shards else ""
    parser.add_argument("--data", required=data_required, metavar="PATH", help=DATA_HELP + where)
    parser.add_argument("--eval-data", metavar="PATH", help="audioset: the evaluation JSON datafile; folder: an "
                        "explicit validation folder/manifest")
    parser.add_argument("--label-csv", metavar="CSV", help="class_labels_indices.csv (index,mid,display_name)")
    parser.add_argument("--fold", type=positive_int, metavar="K", help="ESC-50 validation fold (1-5)")


def load_for_inference(checkpoint: str, precision: str = "fp32", *, labels: str | None = None,
                       torch_only: bool = False, verbose: bool = False):
    """load_model for the inference commands: `precision` resolved for this machine (`torch_only`: explanations,
    which need the torch model), and with `verbose` one stderr line saying what runs and why."""
    from ..model.precision import choose_precision
    from ..weights.checkpoint import load_model

    choice = choose_precision(precision, torch_only=torch_only)
    model = load_model(checkpoint, precision=choice, labels=labels)
    if verbose:
        print(f"ast-audio: {choice.describe()}", file=sys.stderr)
    return model


def report_file_error(path: str, exc: Exception) -> None:
    """One stderr line for an input a batch command skips: `ast-audio: <path>: <message>` (the path once)."""
    from ..utils import one_line

    message = one_line(exc)
    prefix = f"{path}: "
    print(f"ast-audio: {message if message.startswith(prefix) else prefix + message}", file=sys.stderr)
