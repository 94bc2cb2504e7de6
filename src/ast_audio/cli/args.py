"""Argument helpers shared by every `ast-audio` command: one number validator factory, the checkpoint, precision and
data-set arguments defined once, and the one vocabulary of docs/cli.md (-o/--output with --force and the overwrite
rule, --labels, --device, --no-progress, and `add_option`, which keeps old spellings as hidden deprecated aliases).

Nothing here (or in any cli module at import time) imports torch: `ast-audio --help` and `ast-audio COMMAND --help`
only build parsers. Heavy imports (models, matplotlib, fastapi, onnx) happen inside the commands' functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import OPTION_RANGES, NumberRange
from ..errors import ConfigError
from ..train.layouts import LAYOUTS
from ..weights.hub import DEFAULT_MODEL

DEFAULT_CHECKPOINT = DEFAULT_MODEL
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
    --labels (its `label_csv`), --fold.

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
    add_labels_arg(parser, "the data's class names: class_labels_indices.csv (index,mid,display_name)")
    parser.add_argument("--fold", type=positive_int, metavar="K", help="ESC-50 validation fold (1-5)")


def load_for_inference(checkpoint: str, precision: str = "fp32", *, labels: str | None = None,
                       torch_only: bool = False, verbose: bool = False, device: str = "cpu"):
    """load_model for the inference commands: `precision` resolved for this machine and `device` (`torch_only`:
    explanations, which need the torch model), and with `verbose` one stderr line saying what runs and why. The model
    is loaded on the CPU; the Tagger (or the command) moves it to `device`."""
    from ..weights.checkpoint import load_model

    model = load_model(checkpoint, precision=precision, labels=labels, device=device, torch_only=torch_only)
    if verbose:
        print(f"ast-audio: {model.precision_choice.describe()}", file=sys.stderr)
    return model


def load_tagger(args: argparse.Namespace, labels: str | None = None):
    """The Tagger of an inference command: --checkpoint in --precision (`load_for_inference`), run on --device."""
    from ..infer.tagger import Tagger

    device = inference_device(args.device, args.precision)
    model = load_for_inference(args.checkpoint, args.precision, labels=labels, verbose=args.verbose, device=device)
    return Tagger(model, device=device)


def report_file_error(path: str, exc: Exception) -> None:
    """One stderr line for an input a batch command skips: `ast-audio: <path>: <message>` (the path once)."""
    from ..utils import one_line, printable

    message = one_line(exc)
    prefix = f"{printable(path)}: "
    print(f"ast-audio: {message if message.startswith(prefix) else prefix + message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------------
# The one vocabulary (docs/cli.md): an option means the same on every command; old spellings stay as hidden aliases.


def warn_deprecated(old: str, new: str) -> None:
    """The one stderr line of a deprecated spelling."""
    print(f"ast-audio: warning: {old} is deprecated; use {new}", file=sys.stderr)


def add_option(parser: Any, *flags: str, deprecated: Sequence[str] = (), **kwargs: Any) -> argparse.Action:
    """`parser.add_argument(*flags, **kwargs)` (parser: a parser or an argument group), plus each spelling in
    `deprecated` as a hidden alias of it: same destination, type and choices, left out of --help, and one stderr
    line `ast-audio: warning: OLD is deprecated; use NEW` when used.

    An option with aliases cannot be `required` in argparse's sense (argparse would not count the alias); the
    command checks it instead (`require_output`).
    """
    action = parser.add_argument(*flags, **kwargs)
    new = max(action.option_strings, key=len)
    base = type(action)

    class DeprecatedAlias(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser_: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            warn_deprecated(option_string or self.option_strings[0], new)
            super().__call__(parser_, namespace, values, option_string)

    same = {k: v for k, v in kwargs.items() if k not in ("action", "help", "default", "required", "dest")}
    for old in deprecated:
        parser.add_argument(old, action=DeprecatedAlias, dest=action.dest, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **same)
    return action


def add_labels_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """`--labels CSV` (train/eval/stats/prepare/calibrate's --label-csv is its hidden alias)."""
    add_option(parser, "--labels", dest="labels", metavar="CSV", deprecated=("--label-csv",), help=help)


def add_output_arg(parser: argparse.ArgumentParser, *, metavar: str, help: str, required: bool = False,
                   deprecated: Sequence[str] = (), default: str | None = None, force: bool = True) -> None:
    """`-o/--output PATH` (what the command writes) and, with `force`, `--force` (replace an existing output).

    `required` with aliases is checked by `require_output` in the command (see `add_option`)."""
    if required and not deprecated:
        add_option(parser, "--output", "-o", metavar=metavar, required=True, help=help)
    else:
        suffix = " (required)" if required else ""
        add_option(parser, "--output", "-o", metavar=metavar, default=default, deprecated=deprecated,
                   help=help + suffix)
    if force:
        parser.add_argument("--force", action="store_true", help="replace the output if it exists (without it an "
                            "existing output is refused)")


def add_positional_output(parser: argparse.ArgumentParser, *, metavar: str, help: str) -> None:
    """An output given as the last positional argument (`convert SRC OUT`, `export CKPT OUT.onnx`, `scenes OUT`) or,
    as on every other command, as -o/--output; plus --force. The command reads it with `require_output`."""
    parser.add_argument("out", nargs="?", metavar=metavar, help=f"{help} (or -o/--output {metavar})")
    add_output_arg(parser, metavar=metavar, help=f"the same as the positional {metavar}")


def require_output(args: argparse.Namespace, metavar: str) -> str:
    """The command's output path: -o/--output, or the positional OUT where the command has one; exactly one."""
    from ..errors import ConfigError

    positional, option = getattr(args, "out", None), getattr(args, "output", None)
    if positional is not None and option is not None:
        raise ConfigError(f"give the output once: as the positional {metavar} or as -o/--output, not both")
    path = positional if positional is not None else option
    if path is None:
        raise ConfigError(f"{args.command} needs an output: -o/--output {metavar}")
    return path


def refuse_existing(path: str | os.PathLike, force: bool) -> None:
    """The overwrite rule of every command: an existing output is refused without --force (docs/cli.md)."""
    from ..errors import OutputError

    if Path(path).exists() and not force:
        raise OutputError(f"{path} already exists; choose another output or pass --force to replace it", path)


def clear_for_force(path: str | os.PathLike, markers: Sequence[str]) -> None:
    """--force on a command that fills a folder step by step (train, demo, scenes): remove the previous output first,
    but only a folder that holds one of `markers` (what that command writes); any other folder is written into and
    nothing in it is deleted (a typo must not cost a user's files)."""
    import shutil

    folder = Path(path)
    if folder.is_dir() and any((folder / name).exists() for name in markers):
        shutil.rmtree(folder)


DEVICE_HELP = "auto (default: a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """`--device` on every command that runs a model."""
    parser.add_argument("--device", default="auto", metavar="DEV", help=DEVICE_HELP)


def inference_device(name: str, precision: str = "fp32") -> str:
    """--device resolved for an inference command ("cpu", "cuda:0", ...): auto is a CUDA GPU when there is one (the
    CPU for the ONNX Runtime precisions, which run there); a CUDA device on a machine without one is a one-line
    ConfigError."""
    import torch

    from ..errors import ConfigError
    from ..train.dist import resolve_device

    if name == "auto" and precision.startswith("ort-"):
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available on this machine; use --device cpu (or auto)")
    return str(resolve_device(name))


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """`--no-progress` on every command that can run for long (a line every few seconds on stderr, or a bar when
    stderr is a terminal: `ast_audio.utils.Progress`)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress lines (or bar) on stderr")


def progress_for(args: argparse.Namespace, what: str, unit: str):
    """The progress callback of a command (`ast_audio.utils.Progress`; silent with --no-progress), a context
    manager."""
    from ..utils import Progress

    return Progress(what, unit, enabled=not getattr(args, "no_progress", False))


def add_strict_arg(parser: argparse.ArgumentParser) -> None:
    """--strict: refuse inputs that can be used only in part (a WAV cut short of its declared length), one error line
    each, instead of a warning line. `main` turns `TruncatedAudioWarning` into an error for it."""
    parser.add_argument("--strict", action="store_true", help="refuse a file holding less audio than its header "
                        "declares (a cut WAV) instead of using what is there with a warning")
