"""`ast-audio` command line: the parser of every command, `main`, and how errors and warnings reach the user.

Each module named in `COMMAND_MODULES` has `register(commands)`, which adds its sub-parsers to the argparse
sub-parser group and sets `func` on each. A `func(args) -> int` raises AstAudioError (or OSError) for user
errors; `main` prints those as one line and exits 1. Nothing imported at module level here imports torch, so
`ast-audio --help` and `ast-audio COMMAND --help` start fast.

Exit status: 0 success; 1 a user error, printed as one line `ast-audio: error: <message>` (add `--debug` for the
traceback); 2 a usage error (argparse); 130 interrupted; 141 (128 + SIGPIPE, what a shell reports for a Unix tool
killed by SIGPIPE) when stdout's reader went away (`ast-audio labels | head`): output ends quietly, no message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import warnings
from collections.abc import Sequence

from ..errors import AstAudioError, AstAudioWarning, TruncatedAudioWarning
from ..utils import one_line
from ..version import __version__

PROG = "ast-audio"
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE
COMMAND_MODULES = (
    "ast_audio.cli.tag",  # tag, convert, demo, scenes
    "ast_audio.cli.embed",  # embed
    "ast_audio.cli.train",  # train, eval, average
    "ast_audio.cli.data",  # prepare, stats
    "ast_audio.cli.events",  # events, calibrate, eval-events, explain
    "ast_audio.cli.listen",  # listen
    "ast_audio.cli.serve",  # serve
    "ast_audio.cli.export",  # export
    "ast_audio.cli.bench",  # bench
    "ast_audio.cli.labels",  # labels
    "ast_audio.cli.archive",  # merge-parts (the archive options of tag and events live there too)
    "ast_audio.cli.distill",  # distill logits
)
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
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    for sub in commands.choices.values():  # `--verbose` also after the command; SUPPRESS keeps a global one
        sub.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: ast-audio's own warnings as one stderr line, others as Python shows them."""
    if issubclass(category, AstAudioWarning):
        print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def _report_in_one_line(verbose: bool, strict: bool = False) -> None:
    """ast-audio's warnings (AstAudioWarning) and, with --verbose, its log messages reach stderr as one line each,
    prefixed like the errors. With --strict a truncated input is an error (TruncatedAudioWarning is also an
    AudioInputError, so it is reported and skipped as any bad file is)."""
    import logging

    warnings.showwarning = _show_warning
    warnings.simplefilter("default", AstAudioWarning)  # once per message and place
    if strict:
        warnings.simplefilter("error", TruncatedAudioWarning)
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
    _report_in_one_line(verbose=args.verbose, strict=getattr(args, "strict", False))
    try:
        if isinstance(getattr(args, "precision", None), str):  # every command refuses a bad one alike, up front
            from ..model.precision import check_precision

            check_precision(args.precision)
        status = args.func(args)
        sys.stdout.flush()  # what is still buffered meets a closed pipe here, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():  # another pipe (a subprocess, a socket) broke: a real error
            return _report(exc, args.debug)
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except (AstAudioError, OSError) as exc:
        return _report(exc, args.debug)


def _report(exc: BaseException, debug: bool) -> int:
    """Print a user error as one line (or re-raise it with --debug); the exit status 1."""
    if debug:
        raise exc
    print(f"{PROG}: error: {_rank_prefix()}{one_line(exc)}", file=sys.stderr)
    _record_for_torchrun(exc)
    return 1


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end has closed (poll flags it with an error or hang-up)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, ValueError, OSError):  # no poll() (Windows) or no descriptor: trust the error
        return True


def _discard_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so what is still buffered (flushed again when Python exits) goes
    nowhere instead of raising BrokenPipeError a second time ("Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _rank_prefix() -> str:
    """"rank R of W: " under torchrun (so the failing rank names itself), else "" (no torch import)."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '0')} of {world}: " if world not in ("", "1") else ""


def _record_for_torchrun(exc: BaseException) -> None:
    """Under torchrun, write torchelastic's error file, so the agent's failure summary names this rank's error as the
    root cause (torch imported only then)."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)


if __name__ == "__main__":
    sys.exit(main())
