"""`ast-audio events`, `calibrate`, `explain`: thin shells over ast_audio.infer (events, calibrate, explain, plots)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .archive import add_archive_args, archive_mode, run_archive_command
from .args import (
    add_checkpoint_arg,
    add_class_filter_args,
    add_data_args,
    add_precision_arg,
    load_for_inference,
    non_negative_float,
    number,
    positive_float,
    positive_int,
    report_file_error,
    unit_float,
)
from .tag import emit

# Files longer than this many seconds get a progress bar on stderr.
PROGRESS_MIN_S = 60.0
EVENT_FORMATS = ("json", "csv", "audacity", "srt")  # ast_audio.infer.formats.EVENT_FORMATS (checked equal by a test)
odd_int = number(int, low=1, odd=True, what="an odd number of windows (1, 3, 5, ...)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add events, calibrate and explain."""
    events = commands.add_parser(
        "events", help="sound events (onset/offset per class) in recordings of any length",
        description="Stream each FILE through sliding windows, then turn per-class window scores into events: "
        "median smoothing over windows, hysteresis thresholding, minimum duration, merge gap. An event runs over "
        "the stretch of time nearest to its active windows' centres (docs/events.md).")
    events.add_argument("files", nargs="*", metavar="FILE", help="audio files (any length, rate, channels); or "
                        "--files-from")
    add_checkpoint_arg(events)
    group = events.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, default=0.5, metavar="T",
                       help="high threshold for every class (default 0.5)")
    group.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate` "
                       "(classes not in the file use 0.5)")
    events.add_argument("--hysteresis", type=unit_float, default=0.5, metavar="R",
                        help="low threshold = R x high: an event continues while the score stays above it "
                        "(default 0.5; 1 = no hysteresis)")
    events.add_argument("--window", type=positive_float, metavar="S", help="window length in seconds "
                        "(default: the model's input length)")
    events.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows (default: half "
                        "the window); events are placed to within about half a hop")
    events.add_argument("--median", type=odd_int, default=1, metavar="N",
                        help="median filter over N windows (odd; default 1 = off)")
    events.add_argument("--min-duration", type=non_negative_float, default=0.0, metavar="S",
                        help="drop events shorter than S seconds (default 0)")
    events.add_argument("--merge-gap", type=non_negative_float, default=0.0, metavar="S",
                        help="merge events of a class at most S seconds apart (default 0)")
    add_class_filter_args(events)
    events.add_argument("--format", choices=EVENT_FORMATS, default="json",
                        help="json (default), csv (file,label,onset,offset,score), audacity (label track), srt")
    events.add_argument("--output", "-o", metavar="OUT", help="write here (atomically) instead of stdout; with "
                        "several files and --format audacity/srt, a folder receiving one file per input")
    events.add_argument("--plot", metavar="PNG", help="also draw the top classes' window scores with the events "
                        "shaded (several inputs: PNG-<input name>.png each)")
    events.add_argument("--plot-classes", type=positive_int, default=5, metavar="N",
                        help="classes drawn by --plot (default 5)")
    events.add_argument("--plot-truth", metavar="CSV", help="--plot: also draw reference events from a CSV with "
                        "label,onset,offset columns (e.g. annotations) above the scores")
    add_precision_arg(events)
    events.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    events.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_archive_args(events)
    events.set_defaults(func=cmd_events)

    calibrate = commands.add_parser(
        "calibrate", help="per-class thresholds from a labelled set (F1-optimal or a target precision)",
        description="Score every clip of a labelled set (clip score = max over windows) and choose, per class, the "
        "threshold with the best F1, or the lowest one reaching --target-precision. Writes label,threshold,f1,"
        "precision,recall; `events --thresholds` and `tag --thresholds` read it.")
    add_checkpoint_arg(calibrate)
    add_data_args(calibrate, layout="folder")
    calibrate.add_argument("--split", choices=("valid", "test", "train", "all"), default="valid",
                           help="which split to calibrate on (default valid; a folder without splits: all)")
    calibrate.add_argument("--mode", choices=("f1", "precision"), default="f1", help="f1 (default) or precision")
    calibrate.add_argument("--target-precision", type=unit_float, default=0.9, metavar="P",
                           help="--mode precision: the precision to reach (default 0.9)")
    calibrate.add_argument("--window", type=positive_float, metavar="S", help="window length in seconds")
    calibrate.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows")
    add_precision_arg(calibrate)
    calibrate.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    calibrate.add_argument("--output", "-o", required=True, metavar="CSV", help="thresholds CSV to write")
    calibrate.set_defaults(func=cmd_calibrate)

    explain = commands.add_parser(
        "explain", help="PNG: the log-mel spectrogram with the model's evidence over it",
        description="Attention rollout from the cls/dist tokens over the patch grid (or, with --class, gradient-"
        "weighted rollout for that class), mapped back to time-frequency cells, drawn over the log-mel spectrogram.")
    explain.add_argument("file", metavar="FILE", help="audio file")
    explain.add_argument("--output", "-o", required=True, metavar="PNG", help="picture to write")
    explain.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: "
                         "class-agnostic rollout)")
    explain.add_argument("--start", type=non_negative_float, default=0.0, metavar="S",
                         help="explain the model input window starting at S seconds (default 0)")
    explain.add_argument("--top-k", type=positive_int, default=3, help="labels in the title (default 3)")
    explain.add_argument("--width", type=positive_int, default=1200, help="picture width in pixels (default 1200)")
    explain.add_argument("--height", type=positive_int, default=600, help="picture height in pixels (default 600)")
    add_checkpoint_arg(explain)
    add_precision_arg(explain)
    explain.set_defaults(func=cmd_explain)


def _progress_bar(total_s: float, name: str):
    """A tqdm bar over audio seconds on stderr, or None when tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=round(total_s, 1), unit="s", desc=Path(name).name, file=sys.stderr, leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")


def _plot_path(plot: str, name: str, many: bool) -> Path:
    path = Path(plot)
    return path.with_name(f"{path.stem}-{Path(name).stem}{path.suffix or '.png'}") if many else path


def cmd_events(args: argparse.Namespace) -> int:
    """Events for FILE...: bad files are reported on stderr and skipped; exit 1 if any failed."""
    from ..audio.io import load_audio_info
    from ..errors import AstAudioError, ConfigError
    from ..infer.calibrate import read_thresholds
    from ..infer.events import EventConfig, detect_events
    from ..infer.formats import format_event_files, format_events, read_events_csv
    from ..infer.tagger import Tagger, score_stream
    from ..labels import check_labels, parse_names, rollup, rollup_scores, selected_classes
    from ..utils import atomic_write_text

    archive = archive_mode(args)
    tagger = Tagger(load_for_inference(args.checkpoint, args.precision, verbose=args.verbose))
    tagger.window_and_hop(args.window, args.hop)  # check the options before decoding anything
    labels, groups = rollup(tagger.labels) if args.rollup else (tagger.labels, None)
    config = EventConfig(threshold=args.threshold,
                         thresholds=read_thresholds(args.thresholds) if args.thresholds else None,
                         hysteresis=args.hysteresis, median_windows=args.median, min_duration_s=args.min_duration,
                         merge_gap_s=args.merge_gap,
                         only=tuple(parse_names(args.only, labels)) if args.only else None,
                         exclude=tuple(parse_names(args.exclude, labels)) if args.exclude else ())
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where=args.thresholds)
    selected_classes(labels, config.only, config.exclude)  # unknown names fail before any decoding
    if archive:
        from ..infer.archive import events_job

        job = events_job(tagger, config, window_s=args.window, hop_s=args.hop, batch_size=args.batch_size)
        return run_archive_command(args, job, tagger.sample_rate)

    truth = read_events_csv(args.plot_truth) if args.plot_truth else []
    many = len(args.files) > 1
    split_outputs = many and args.format in ("audacity", "srt") and args.output is not None
    if split_outputs and Path(args.output).exists() and not Path(args.output).is_dir():
        raise ConfigError(f"{args.output} is a file; with several inputs and --format {args.format}, -o must be a "
                          "folder (one label file per input)")
    results = []  # (name, timeline, events)
    failed = 0
    for path in args.files:
        bar = None
        try:
            if not args.no_progress:
                total = load_audio_info(path).duration_s
                if total >= PROGRESS_MIN_S:
                    bar = _progress_bar(total, path)

            def progress(done: float, total: float, bar=bar) -> None:
                if bar is not None:
                    bar.update(round(done, 1) - bar.n)

            timeline = score_stream(tagger, path, window_s=args.window, hop_s=args.hop, batch_size=args.batch_size,
                                    progress=progress)
        except AstAudioError as exc:
            if args.debug:
                raise
            report_file_error(path, exc)
            failed += 1
            continue
        finally:
            if bar is not None:
                bar.close()
        if groups is not None:  # (N, C) -> (N, C'): the model's classes, then the parents they roll up to
            timeline = dataclasses.replace(timeline, scores=rollup_scores(timeline.scores, groups), labels=labels)
        events = detect_events(timeline, config)
        results.append((path, timeline, events))
        if args.plot:
            from ..infer.plots import plot_timeline

            plot_timeline(timeline, events, _plot_path(args.plot, path, many), top_n=args.plot_classes,
                          title=f"{Path(path).name}: {len(events)} event(s), window {timeline.window_s:g} s, "
                          f"hop {timeline.hop_s:g} s", truth=truth)

    if split_outputs:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".txt" if args.format == "audacity" else ".srt"
        for name, _, events in results:
            atomic_write_text(out / f"{Path(name).stem}{suffix}", format_events(events, args.format))
    else:
        emit(format_event_files(results, args.format), args.output)
    return 1 if failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Per-class thresholds from a labelled set; unreadable clips are reported and skipped (exit 1 at the end)."""
    from ..errors import ConfigError
    from ..infer.calibrate import calibration_table, score_clips, write_thresholds
    from ..infer.tagger import Tagger
    from ..train.layouts import load_splits

    splits = load_splits(args.layout, args.data, fold=args.fold, eval_data=args.eval_data, label_csv=args.label_csv)
    if args.split == "all":
        manifests = [m for m in (splits.train, splits.valid, splits.test) if m is not None]
    else:
        chosen = getattr(splits, args.split)
        if chosen is None:
            raise ConfigError(f"this data set has no {args.split} split; use --split valid or train")
        manifests = [chosen]
    tagger = Tagger(load_for_inference(args.checkpoint, args.precision, verbose=args.verbose))
    tagger.window_and_hop(args.window, args.hop)
    data_labels = manifests[0].labels
    clips = [(e.source, [data_labels[t] for t in e.targets]) for m in manifests for e in m.examples]
    failed = 0

    def report(path: str, exc: Exception) -> None:
        nonlocal failed
        if args.debug:
            raise exc
        report_file_error(path, exc)
        failed += 1

    score_matrix, target_matrix = score_clips(tagger, clips, window_s=args.window, hop_s=args.hop,
                                              batch_size=args.batch_size, on_error=report)  # (N, C) each
    table = calibration_table(score_matrix, target_matrix, tagger.labels, mode=args.mode,
                              target_precision=args.target_precision)
    present = [label for label, col in zip(tagger.labels, target_matrix.sum(0).tolist(), strict=True) if col > 0]
    kept = {label: table[label]["threshold"] for label in present}
    write_thresholds(kept, args.output, stats={label: table[label] for label in present})
    missing = len(tagger.labels) - len(present)
    print(f"calibrated {len(kept)} classes on {score_matrix.shape[0]} clips ({args.mode}"
          f"{f', target precision {args.target_precision:g}' if args.mode == 'precision' else ''}); "
          f"wrote {args.output}" + (f"; {missing} classes without positives left out" if missing else ""),
          file=sys.stderr)
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Draw the explanation of one model window of FILE as a PNG."""
    from ..audio.io import read_window
    from ..infer.explain import explain
    from ..infer.plots import plot_explanation
    from ..labels import check_labels

    model = load_for_inference(args.checkpoint, args.precision, torch_only=True, verbose=args.verbose)
    if args.class_name is not None:
        check_labels([args.class_name], model.labels)
    waveform = read_window(args.file, model.frontend.sample_rate, args.start, model.frontend.input_samples)
    expl = explain(model, waveform, class_name=args.class_name, top_k=args.top_k)
    expl.start_s = args.start if args.start else 0.0
    plot_explanation(expl, args.output, width_px=args.width, height_px=args.height)
    tops = ", ".join(f"{label} {score:.3f}" for label, score in expl.labels)
    print(f"wrote {args.output} ({expl.method}{f' for {args.class_name}' if args.class_name else ''}; top: {tops})",
          file=sys.stderr)
    return 0
