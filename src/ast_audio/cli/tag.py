"""`ast-audio tag`, `convert` and `demo`: tag audio files, convert a checkpoint, run the offline demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AstAudioError, ConfigError
from ..infer.names import TAG_FORMATS
from .archive import add_archive_args, archive_mode, run_archive_command
from .args import (
    DEFAULT_CHECKPOINT,
    add_class_filter_args,
    add_device_arg,
    add_output_arg,
    add_positional_output,
    add_precision_arg,
    add_strict_arg,
    clear_for_force,
    load_tagger,
    number,
    positive_float,
    positive_int,
    refuse_existing,
    report_file_error,
    require_output,
    unit_float,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add tag, convert and demo."""
    tag = commands.add_parser("tag", help="tag audio files with an AST checkpoint",
                              description="Tag audio files. Audio longer than the model's input is scored with "
                              "overlapping sliding windows and aggregated (nothing is truncated).")
    tag.add_argument("files", nargs="*", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...); or --files-from")
    tag.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                     help=f"checkpoint folder, .pth file or hub id (default: {DEFAULT_CHECKPOINT})")
    tag.add_argument("--labels", metavar="CSV", help="class-label CSV overriding the checkpoint's label names")
    tag.add_argument("--top-k", type=positive_int, default=10, help="labels shown per clip/window (default 10)")
    tag.add_argument("--format", choices=TAG_FORMATS, default="table", help="output format")
    tag.add_argument("--window", type=positive_float, metavar="S",
                     help="sliding-window length in seconds (default: the model's input length)")
    tag.add_argument("--hop", type=positive_float, metavar="S",
                     help="seconds between window starts (default: half the window)")
    tag.add_argument("--aggregate", choices=("max", "mean"), default="max",
                     help="clip score from window scores (default max)")
    tag.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    tag.add_argument("--all-scores", action="store_true", help="json: include every class's clip score")
    add_output_arg(tag, metavar="PATH", help="write the result here (atomically) instead of stdout; with "
                   "--files-from, the JSON-lines file")
    tag.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate`: report "
                     "every listed class whose score reaches its threshold (instead of the top-k)")
    add_class_filter_args(tag)
    tag.add_argument("--onnx", metavar="OUT.onnx", help="run this graph from `ast-audio export` with onnxruntime "
                     "instead of a checkpoint (labels and front end come from the graph)")
    add_precision_arg(tag)
    add_device_arg(tag)
    add_strict_arg(tag)
    add_archive_args(tag)
    tag.set_defaults(func=cmd_tag)

    convert = commands.add_parser("convert", help="convert a checkpoint to the native or transformers format")
    convert.add_argument("source", metavar="SRC", help="checkpoint folder, .pth file or hub id")
    add_positional_output(convert, metavar="OUT", help="output folder")
    convert.add_argument("--format", choices=("native", "hf"), required=True,
                         help="native: model.safetensors + config.json; hf: a transformers AST folder")
    convert.add_argument("--labels", metavar="CSV", help="class-label CSV to store with the model")
    convert.set_defaults(func=cmd_convert)

    demo = commands.add_parser("demo", help="offline demo: generate audio, train a small AST, evaluate, tag")
    add_output_arg(demo, metavar="DIR", default="demo-output", deprecated=("--out",),
                   help="output folder (default ./demo-output)")
    demo.add_argument("--seconds-budget", type=positive_float, default=90.0, metavar="S",
                      help="expected training time in seconds: a longer run prints a warning; training always "
                           "runs its fixed number of epochs, so the model does not depend on the machine's speed "
                           "(default 90)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=cmd_demo)

    scenes = commands.add_parser(
        "scenes", help="write scenes of demo sounds at known times (audio + DCASE truth), to test event detection",
        description="Minutes of quiet background with the demo's sounds (tone, chirp, noise_burst, click_train) "
        "one after another, 0.2-1.5 s apart, some overlapping the one before. Writes OUT/scene_NNN.wav, "
        "OUT/strong.tsv (filename, onset, offset, event_label) and OUT/durations.tsv (filename, duration): the "
        "layout `train --recipe sed` reads and the truth `eval-events`, `calibrate` and `events --plot-truth` read. "
        "Harder conditions: --swell, --snr, --overlap (docs/events.md).")
    add_positional_output(scenes, metavar="OUT", help="output folder")
    scenes.add_argument("--count", type=positive_int, default=5, help="number of scenes (default 5)")
    scenes.add_argument("--seconds", type=positive_float, default=120.0, help="length of each (default 120)")
    scenes.add_argument("--overlap", type=unit_float, default=0.2, metavar="P",
                        help="fraction of sounds that start inside the one before (default 0.2)")
    scenes.add_argument("--swell", type=number(float, low=0, high=40), default=0.0, metavar="DB",
                        help="the background swells and fades by up to DB dB (default 0: a steady background)")
    scenes.add_argument("--snr", type=number(float, low=-20, high=60), nargs=2, metavar=("LOW", "HIGH"),
                        help="each sound's level: a signal-to-noise ratio in [LOW, HIGH] dB over the background "
                        "under it (default: peak 0.1-0.5, at least 6 dB above the steady background)")
    scenes.add_argument("--audio-format", choices=("wav", "flac"), default="wav", help="wav (default) or flac")
    scenes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    scenes.set_defaults(func=cmd_scenes)


def emit(text: str, output: str | None) -> None:
    """`text` to stdout, or atomically to the file `output`."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from ..utils import atomic_write_text

        atomic_write_text(output, text)


def _tagger(args: argparse.Namespace) -> Any:
    """The Tagger of --onnx (which takes no --precision or --device) or of --checkpoint."""
    if not getattr(args, "onnx", None):
        return load_tagger(args, labels=args.labels)
    from ..infer.tagger import load_onnx_tagger

    if args.precision != "fp32":
        raise AstAudioError("--precision applies to checkpoints; an ONNX graph's precision is chosen when it is "
                            "exported (`ast-audio export --precision int8`)")
    if args.device not in ("auto", "cpu"):
        raise AstAudioError("--device applies to checkpoints; an ONNX graph runs on the CPU with onnxruntime")
    return load_onnx_tagger(args.onnx, labels=args.labels)


def cmd_tag(args: argparse.Namespace) -> int:
    """Tag FILE...: bad files are reported one per line on stderr, the rest are still tagged; 1 if any failed."""
    from ..infer.formats import format_tags

    archive = archive_mode(args)
    if not archive and args.output is not None:
        refuse_existing(args.output, args.force)
    tagger = _tagger(args)
    # The windows, decided once (and checked) before spending time decoding files.
    windowing = tagger.windowing(args.window, args.hop)
    refine = tag_label_filter(args, tagger.labels)  # --thresholds/--only/--exclude, names checked up front
    if archive:
        from ..infer.archive import tag_job

        job = tag_job(tagger, top_k=args.top_k, windowing=windowing, aggregate=args.aggregate,
                      batch_size=args.batch_size, all_scores=args.all_scores, refine=refine)
        return run_archive_command(args, job, tagger.sample_rate)
    failed = 0

    def report(index: int, exc: AstAudioError) -> None:  # a bad file: one line, the others are still tagged
        nonlocal failed
        if args.debug:
            raise exc
        report_file_error(args.files[index], exc)
        failed += 1

    # Files are streamed block by block (memory bounded by one batch of windows, whatever their length).
    results = tagger.tag(args.files, top_k=args.top_k, windowing=windowing,
                         aggregate=args.aggregate, batch_size=args.batch_size, on_error=report)
    for result in results:
        refine(result)
    emit(format_tags(results, args.format, all_scores=args.all_scores), args.output)
    return 1 if failed else 0


def tag_label_filter(args: argparse.Namespace, labels: tuple[str, ...]) -> Callable[[Any], None]:
    """`ast_audio.labels.tag_label_filter` of --rollup, --thresholds, --only, --exclude and --top-k."""
    from ..infer.calibrate import read_thresholds
    from ..labels import tag_label_filter as label_filter

    return label_filter(labels, rollup_parents=bool(getattr(args, "rollup", False)),
                        thresholds=read_thresholds(args.thresholds) if args.thresholds else None,
                        thresholds_where=args.thresholds or "", only=args.only, exclude=args.exclude,
                        top_k=args.top_k)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert SRC to OUT in the native or transformers format; refuses to replace OUT without --force."""
    out = Path(require_output(args, "OUT"))
    refuse_existing(out, args.force)
    from ..weights.checkpoint import load_model, save_hf, save_model

    model = load_model(args.source, labels=args.labels)
    (save_hf if args.format == "hf" else save_model)(model, out)
    print(f"wrote {args.format} checkpoint to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate data, train, evaluate, save and tag: see ast_audio.apps.demo.run_demo."""
    from ..apps.demo import run_demo

    refuse_existing(args.output, args.force)
    clear_for_force(args.output, ("model", "training", "data"))
    run_demo(args.output, seconds_budget=args.seconds_budget, seed=args.seed)
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    """Write generated scenes and their truth: see ast_audio.apps.demo.write_scenes."""
    from ..apps.demo import write_scenes

    if args.snr is not None and args.snr[0] > args.snr[1]:
        raise ConfigError(f"--snr {args.snr[0]:g} {args.snr[1]:g}: LOW is above HIGH; give the range low first")
    out = require_output(args, "OUT")
    refuse_existing(out, args.force)
    clear_for_force(out, ("strong.tsv", "durations.tsv"))
    paths, truth, durations = write_scenes(out, args.count, args.seconds, seed=args.seed,
                                           audio_format=args.audio_format, overlap=args.overlap,
                                           swell_db=args.swell, snr_db=tuple(args.snr) if args.snr else None)
    print(f"wrote {len(paths)} scene(s) of {args.seconds:g} s to {out}; truth {truth}, durations {durations}",
          file=sys.stderr)
    return 0
