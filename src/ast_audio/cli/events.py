"""`ast-audio events`, `calibrate`, `explain`: thin shells over ast_audio.infer (events, calibrate, explain, plots)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..infer.explain_methods import DEFAULT_METHOD as DEFAULT_EXPLAIN_METHOD
from ..infer.explain_methods import METHODS as EXPLAIN_METHODS
from ..infer.names import (
    CLIP_DETECTION,
    DEFAULT_HYSTERESIS,
    DEFAULT_THRESHOLD,
    EVENT_FORMATS,
    FRAME_DETECTION,
    GRIDS,
    REFINES,
    DetectionDefaults,
)
from .archive import add_archive_args, archive_mode, run_archive_command
from .args import (
    add_checkpoint_arg,
    add_class_filter_args,
    add_data_args,
    add_device_arg,
    add_option,
    add_output_arg,
    add_precision_arg,
    add_progress_arg,
    add_strict_arg,
    inference_device,
    load_for_inference,
    load_tagger,
    non_negative_float,
    option_type,
    positive_float,
    positive_int,
    progress_for,
    refuse_existing,
    report_file_error,
    unit_float,
)
from .tag import emit

if TYPE_CHECKING:  # torch-importing modules: only for the annotations (`--help` must not import torch)
    from ..infer.events import EventConfig

odd_int = option_type("median")  # the same ranges as the server's fields (ast_audio.config.OPTION_RANGES)


def kind_defaults(refinement: bool = True) -> str:
    """The detection defaults by kind of model, in words (events' and listen's help); `refinement`: say which kind
    refines boundaries with the recording's energy (not for listen, which never does)."""

    def rule(d: DetectionDefaults, refine: str) -> str:
        return (f"threshold {DEFAULT_THRESHOLD:g}, hysteresis {DEFAULT_HYSTERESIS:g}, median {d.median_windows}, "
                f"min duration {d.min_duration_s:g} s, merge gap {d.merge_gap_s:g} s" + (refine if refinement else ""))

    return (f"Defaults by kind of model: a clip model {rule(CLIP_DETECTION, ', energy refinement')}; a frame model "
            f"{rule(FRAME_DETECTION, ', no refinement')} (its median in frame columns)")


def _add_detection_args(parser: argparse.ArgumentParser) -> None:
    """How window or frame scores become events (`ast_audio.infer.events.EventConfig`: its defaults are these
    options' defaults; --median, --min-duration and --merge-gap left out stay None, the model kind's default), for
    events and calibrate --truth."""
    parser.add_argument("--hysteresis", type=option_type("hysteresis"), default=DEFAULT_HYSTERESIS, metavar="R",
                        help="low threshold = R x high: an event continues while the score stays above it "
                        f"(default {DEFAULT_HYSTERESIS}; 1 = no hysteresis)")
    clip, frame = CLIP_DETECTION, FRAME_DETECTION  # the defaults by kind of model (EventConfig.for_kind)
    parser.add_argument("--median", type=odd_int, metavar="N",
                        help="median filter over N grid pieces (odd; 1 = off; default: "
                        f"{clip.median_windows} for a clip model, {frame.median_windows} frame columns for a frame "
                        "model)")
    parser.add_argument("--min-duration", type=option_type("min_duration"), metavar="S",
                        help=f"drop events shorter than S seconds (default: {clip.min_duration_s:g} for a clip model, "
                        f"{frame.min_duration_s:g} for a frame model)")
    parser.add_argument("--merge-gap", type=option_type("merge_gap"), metavar="S",
                        help=f"merge events of a class at most S seconds apart (default: {clip.merge_gap_s:g} for a "
                        f"clip model, {frame.merge_gap_s:g} for a frame model)")
    parser.add_argument("--grid", choices=GRIDS, default="mean",
                        help="where window scores are thresholded: mean (default) or max of the windows covering "
                        "each stretch between window edges (overlap-add), or cells (each window's score on the "
                        "hop-long stretch around its centre: the earlier rule)")
    parser.add_argument("--refine", choices=REFINES, default="auto",
                        help="auto (default): energy for a clip model, none for a frame model; energy: move each "
                        "boundary to the nearest start/end of a loud stretch of the recording within half a window, "
                        "and split events at quiet gaps; none: scores alone")
    parser.add_argument("--no-interpolate", dest="interpolate", action="store_false",
                        help="put boundaries on the grid's edges instead of where the line between neighbouring "
                        "grid scores crosses the threshold (sub-hop boundaries, the default)")


def _event_config(args: argparse.Namespace, labels: tuple[str, ...], threshold: float = DEFAULT_THRESHOLD,
                  thresholds: dict[str, float] | None = None) -> EventConfig:
    """The EventConfig of the detection arguments (and --only/--exclude where the command has them)."""
    from ..infer.events import EventConfig
    from ..labels import parse_names

    only, exclude = getattr(args, "only", None), getattr(args, "exclude", None)
    return EventConfig(threshold=threshold, thresholds=thresholds, hysteresis=args.hysteresis,
                       median_windows=args.median, min_duration_s=args.min_duration, merge_gap_s=args.merge_gap,
                       only=tuple(parse_names(only, labels)) if only else None,
                       exclude=tuple(parse_names(exclude, labels)) if exclude else (),
                       grid=args.grid, interpolate=args.interpolate, refine=args.refine)


def register(commands: argparse._SubParsersAction) -> None:
    """Add events, calibrate and explain."""
    events = commands.add_parser(
        "events", help="sound events (onset/offset per class) in recordings of any length",
        description="A clip model: stream each FILE through sliding windows (by default half the model's input, "
        "every tenth of a window) and average the overlapping windows' scores onto a gapless grid. A frame model: "
        "one pass per window of its input (hop = window), its frame scores stitched on one gapless grid. Then per "
        "class: median smoothing, hysteresis thresholding with boundaries interpolated between grid points, "
        "boundaries snapped to the recording's loud stretches (clip models), merge gap, minimum duration. "
        f"{kind_defaults()} (docs/events.md).")
    events.add_argument("files", nargs="*", metavar="FILE", help="audio files (any length, rate, channels); or "
                        "--files-from")
    add_checkpoint_arg(events)
    group = events.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, default=DEFAULT_THRESHOLD, metavar="T",
                       help=f"high threshold for every class (default {DEFAULT_THRESHOLD})")
    group.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate` "
                       f"(classes not in the file use {DEFAULT_THRESHOLD})")
    events.add_argument("--window", type=positive_float, metavar="S", help="window length in seconds (default: "
                        "half a clip model's input length; a frame model's input; ast_audio.infer.windowing."
                        "event_windowing)")
    events.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows (default: "
                        "a tenth of the window for a clip model; the window "
                        "for a frame model, or half of it for 50%% overlap; docs/events.md)")
    _add_detection_args(events)
    add_class_filter_args(events)
    events.add_argument("--format", choices=EVENT_FORMATS, default="json",
                        help="json (default), csv (file,label,onset,offset,score), audacity (label track), srt, "
                        "dcase (filename<TAB>onset<TAB>offset<TAB>event_label, what sed_eval/sed_scores_eval read)")
    events.add_argument("--durations", metavar="TSV", help="also write the files' durations as a DCASE table "
                        "(filename<TAB>duration), for eval-events and the DCASE scorers")
    events.add_argument("--scores-dir", metavar="DIR", help="also write each file's scores on the grid (a frame "
                        "model: its frame columns) as "
                        "DIR/<name>.tsv (onset<TAB>offset<TAB><class...>, gapless from 0 to the end): what "
                        "sed_scores_eval and `ast-audio eval-events --scores-dir` read for PSDS")
    add_output_arg(events, metavar="OUT", help="write here (atomically) instead of stdout; with several files and "
                   "--format audacity/srt, a folder receiving one file per input; with --files-from, the JSON-lines "
                   "file")
    events.add_argument("--plot", metavar="PNG", help="also draw the top classes' window scores with the events "
                        "shaded (several inputs: PNG-<input name>.png each)")
    add_option(events, "--top-k", type=positive_int, default=5, metavar="N", deprecated=("--plot-classes",),
               help="classes drawn by --plot: the N with the highest peak score, plus any with an event (default 5)")
    events.add_argument("--plot-truth", metavar="TSV", help="--plot: also draw each file's reference events from a "
                        "DCASE event table (filename onset offset event_label, e.g. the strong.tsv of `scenes`; "
                        "rows matched by file name) above the scores")
    add_precision_arg(events)
    add_device_arg(events)
    events.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    add_progress_arg(events)
    add_strict_arg(events)
    add_archive_args(events)
    events.set_defaults(func=cmd_events)

    calibrate = commands.add_parser(
        "calibrate", help="per-class thresholds from a labelled set (F1-optimal or a target precision), or for "
        "event-based F1 on strongly labelled recordings (--truth)",
        description="Score every clip of a labelled set (clip score = max over windows) and choose, per class, the "
        "threshold with the best F1, or the lowest one reaching --target-precision. With --truth TSV (DCASE events: "
        "filename, onset, offset, event_label) and --audio-dir, run event detection on those recordings instead and "
        "choose, per class, the threshold (0.05, 0.10, ..., 0.95) with the best collar-based event F1 (sed_eval). "
        "Writes label,threshold,f1,precision,recall; `events --thresholds` and `tag --thresholds` read it.")
    add_checkpoint_arg(calibrate)
    add_data_args(calibrate, layout="folder", data_required=False)
    calibrate.add_argument("--truth", metavar="TSV", help="strongly labelled recordings: a DCASE event table; "
                           "calibrates for event-based F1 (the detection options below apply, as in `events`)")
    calibrate.add_argument("--audio-dir", metavar="DIR", help="--truth: the folder holding its files (default: the "
                           "table's folder)")
    _add_detection_args(calibrate)
    calibrate.add_argument("--split", choices=("valid", "test", "train", "all"), default="valid",
                           help="which split to calibrate on (default valid; a folder without splits: all)")
    calibrate.add_argument("--mode", choices=("f1", "precision"), default="f1", help="f1 (default) or precision")
    calibrate.add_argument("--target-precision", type=unit_float, default=0.9, metavar="P",
                           help="--mode precision: the precision to reach (default 0.9)")
    calibrate.add_argument("--window", type=positive_float, metavar="S", help="window length in seconds (default: the "
                           "model's input; with --truth, half of it, as in events)")
    calibrate.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows")
    add_precision_arg(calibrate)
    add_device_arg(calibrate)
    calibrate.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    add_output_arg(calibrate, metavar="CSV", required=True, help="thresholds CSV to write")
    add_progress_arg(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    evaluate = commands.add_parser(
        "eval-events", help="score events against a truth table: event/segment F1 (sed_eval), PSDS1/2",
        description="Collar-based F1 (onset collar 0.2 s, offset collar max(0.2 s, 20%)) and segment-based F1 "
        "(1 s segments) of an event table (--pred, sed_eval), or of score tables at --threshold (--scores-dir, "
        "sed_scores_eval); PSDS1 and PSDS2 with the DCASE parameters from score tables (sed_scores_eval). "
        "Needs the `events` extra (docs/events.md).")
    evaluate.add_argument("--truth", required=True, metavar="TSV",
                          help="true events: filename<TAB>onset<TAB>offset<TAB>event_label")
    evaluate.add_argument("--pred", metavar="TSV", help="events from `ast-audio events --format dcase`")
    evaluate.add_argument("--scores-dir", metavar="DIR", help="score tables from `ast-audio events --scores-dir`")
    evaluate.add_argument("--durations", metavar="TSV", help="filename<TAB>duration (default: each score table's "
                          "end; with --pred only, sed_eval's default, the last event's offset)")
    group = evaluate.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, default=DEFAULT_THRESHOLD, metavar="T",
                       help="--scores-dir without --pred: the decision threshold for the F1 values (default "
                            f"{DEFAULT_THRESHOLD})")
    group.add_argument("--thresholds", metavar="CSV", help="per-class decision thresholds (`ast-audio calibrate`)")
    evaluate.add_argument("--json", metavar="OUT", help="also write the results as JSON (with the PSD-ROC points)")
    evaluate.add_argument("--plot", metavar="PNG", help="draw the PSD-ROC curves (needs --scores-dir)")
    evaluate.set_defaults(func=cmd_eval_events)

    explain = commands.add_parser(
        "explain", help="PNG: the log-mel spectrogram with the model's evidence over it",
        description="Relevance of each time-frequency cell for the model's output, drawn over the log-mel "
        "spectrogram. --method gradient-rollout (default): gradient-weighted attention rollout for one class, the "
        "top-scoring one unless --class names another (Chefer et al. 2021). --method rollout: class-agnostic "
        "attention rollout from the cls/dist tokens (Abnar & Zuidema 2020), the same map for every class.")
    explain.add_argument("file", metavar="FILE", help="audio file")
    add_output_arg(explain, metavar="PNG", required=True, help="picture to write")
    explain.add_argument("--method", choices=EXPLAIN_METHODS, default=DEFAULT_EXPLAIN_METHOD,
                         help="gradient-rollout (default): evidence for one class; rollout: class-agnostic "
                         "attention flow (takes no --class)")
    explain.add_argument("--class", dest="class_name", metavar="NAME", help="the class gradient-rollout explains "
                         "(default: the top-scoring class); rollout is class-agnostic and refuses it")
    explain.add_argument("--start", type=non_negative_float, default=0.0, metavar="S",
                         help="explain the model input window starting at S seconds (default 0)")
    explain.add_argument("--top-k", type=positive_int, default=3, help="labels in the title (default 3)")
    explain.add_argument("--width", type=positive_int, default=1200, help="picture width in pixels (default 1200)")
    explain.add_argument("--height", type=positive_int, default=600, help="picture height in pixels (default 600)")
    add_checkpoint_arg(explain)
    add_precision_arg(explain)
    add_device_arg(explain)
    explain.set_defaults(func=cmd_explain)


def _plot_path(plot: str, name: str, many: bool) -> Path:
    path = Path(plot)
    return path.with_name(f"{path.stem}-{Path(name).stem}{path.suffix or '.png'}") if many else path


def cmd_events(args: argparse.Namespace) -> int:
    """Events for FILE...: bad files are reported on stderr and skipped; exit 1 if any failed."""
    from ..errors import AstAudioError, ConfigError
    from ..infer.calibrate import read_thresholds
    from ..infer.events import Event, score_grid
    from ..infer.formats import dcase_durations, format_event_files, format_events, scores_tsv
    from ..infer.pipeline import EventPipeline
    from ..labels import check_labels, rollup
    from ..utils import atomic_write_text

    archive = archive_mode(args)
    if not archive and args.output is not None:
        refuse_existing(args.output, args.force)
    tagger = load_tagger(args)
    labels = rollup(tagger.labels)[0] if args.rollup else tagger.labels
    config = _event_config(args, labels, args.threshold,
                           read_thresholds(args.thresholds) if args.thresholds else None)
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where=args.thresholds)
    # Windows, class names and thresholds are checked here, before anything is decoded.
    pipeline = EventPipeline(tagger, config, window_s=args.window, hop_s=args.hop, rollup=args.rollup,
                             batch_size=args.batch_size)
    if archive:
        from ..infer.archive import events_job

        return run_archive_command(args, events_job(pipeline), tagger.sample_rate)

    truth = None
    if args.plot_truth:  # the DCASE event table (what `scenes` writes as strong.tsv); rows matched by file name
        from ..infer.tsv import read_strong

        truth = read_strong(args.plot_truth, what="truth")
        if not any(truth.has_file(path) for path in args.files):
            raise ConfigError(f"{args.plot_truth} lists none of the input files (it has e.g. "
                              f"{truth.files[0] if truth.files else 'no rows'}); give the truth of these files")
    if args.scores_dir:
        scores_dir = Path(args.scores_dir)
        if scores_dir.exists() and not scores_dir.is_dir():
            raise ConfigError(f"{scores_dir} is a file; --scores-dir needs a folder (one score table per input)")
        scores_dir.mkdir(parents=True, exist_ok=True)
        stems = [Path(p).stem for p in args.files]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise ConfigError(f"two inputs are named {twice[0]}.*; --scores-dir names each table after its file, "
                              "so give files with different names")
    many = len(args.files) > 1
    split_outputs = many and args.format in ("audacity", "srt") and args.output is not None
    if split_outputs and Path(args.output).exists() and not Path(args.output).is_dir():
        raise ConfigError(f"{args.output} is a file; with several inputs and --format {args.format}, -o must be a "
                          "folder (one label file per input)")
    results = []  # (name, timeline, events)
    failed = 0
    for path in args.files:
        try:
            with progress_for(args, Path(path).name, "s of audio") as progress:  # long files: a line every few s
                result = pipeline.run(path, progress=progress)
        except AstAudioError as exc:
            if args.debug:
                raise
            report_file_error(path, exc)
            failed += 1
            continue
        timeline, events = result.timeline, result.events
        results.append((path, timeline, events))
        if args.scores_dir:
            reduce = "mean" if config.grid == "cells" else config.grid
            atomic_write_text(Path(args.scores_dir) / f"{Path(path).stem}.tsv",
                              scores_tsv(score_grid(timeline, reduce)))
        if args.plot:
            from ..infer.plots import plot_timeline

            plot_timeline(timeline, events, _plot_path(args.plot, path, many), top_n=args.top_k,
                          title=f"{Path(path).name}: {len(events)} event(s), window {timeline.window_s:g} s, "
                          f"hop {timeline.hop_s:g} s",
                          truth=[Event(label, on, off, 1.0) for on, off, label in truth.events_of(path)]
                          if truth is not None else ())

    if split_outputs:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".txt" if args.format == "audacity" else ".srt"
        for name, _, events in results:
            atomic_write_text(out / f"{Path(name).stem}{suffix}", format_events(events, args.format))
    else:
        emit(format_event_files(results, args.format), args.output)
    if args.durations:
        atomic_write_text(args.durations, dcase_durations({name: t.duration_s for name, t, _ in results}))
    return 1 if failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Per-class thresholds from a labelled set; unreadable clips are reported and skipped (exit 1 at the end)."""
    from ..errors import ConfigError
    from ..infer.calibrate import calibration_table, score_clips, write_thresholds
    from ..train.layouts import load_splits

    refuse_existing(args.output, args.force)
    if args.truth is not None:
        if args.data is not None:
            raise ConfigError("give --data (clip-level F1 on a labelled set) or --truth (event F1 on strongly "
                              "labelled recordings), not both")
        return _calibrate_events(args)
    if args.data is None:
        raise ConfigError("give --data (a labelled set, clip-level F1) or --truth TSV (strongly labelled "
                          "recordings, event F1)")
    splits = load_splits(args.layout, args.data, fold=args.fold, eval_data=args.eval_data, label_csv=args.labels)
    if args.split == "all":
        manifests = [m for m in (splits.train, splits.valid, splits.test) if m is not None]
    else:
        chosen = getattr(splits, args.split)
        if chosen is None:
            raise ConfigError(f"this data set has no {args.split} split; use --split valid or train")
        manifests = [chosen]
    tagger = load_tagger(args)
    windowing = tagger.windowing(args.window, args.hop)  # checked before anything is decoded
    data_labels = manifests[0].labels
    clips = [(e.source, [data_labels[t] for t in e.targets]) for m in manifests for e in m.examples]
    failed = 0

    def report(path: str, exc: Exception) -> None:
        nonlocal failed
        if args.debug:
            raise exc
        report_file_error(path, exc)
        failed += 1

    with progress_for(args, "calibrate", "clips") as progress:
        score_matrix, target_matrix = score_clips(tagger, clips, windowing=windowing,
                                                  batch_size=args.batch_size, on_error=report,
                                                  progress=progress)  # (N, C) each
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


def _calibrate_events(args: argparse.Namespace) -> int:
    """calibrate --truth: score every recording of the truth table through the events pipeline, then
    `calibrate_events`."""
    from ..errors import ConfigError
    from ..infer.calibrate import calibrate_events, write_thresholds
    from ..infer.pipeline import EventPipeline
    from ..infer.tsv import read_strong

    if args.mode != "f1":
        raise ConfigError("--truth calibrates for event-based F1 only; leave out --mode precision")
    folder = Path(args.audio_dir) if args.audio_dir else Path(args.truth).parent
    tagger = load_tagger(args)
    table = read_strong(args.truth, labels=set(tagger.labels), what="truth")  # a class the model lacks: its row
    truth, names = table.by_audio_id(), list(table.files)
    pipeline = EventPipeline(tagger, _event_config(args, tagger.labels), window_s=args.window, hop_s=args.hop,
                             batch_size=args.batch_size)
    failed = []

    def skip(path: str, exc: Exception) -> None:  # a recording that cannot be decoded: one line, the rest go on
        if args.debug:
            raise exc
        report_file_error(path, exc)
        failed.append(path)

    progress = progress_for(args, "calibrate", "recordings")
    timelines, energies = pipeline.score_files({name.rsplit(".", 1)[0]: folder / name for name in names},
                                               on_error=skip, progress=progress)
    progress.close()
    if not timelines:
        raise ConfigError(f"none of the {len(names)} recordings of {args.truth} could be scored (looked in {folder})")
    table = calibrate_events(timelines, truth, pipeline.config, energies=energies or None)
    write_thresholds({label: row["threshold"] for label, row in table.items()}, args.output, stats=table)
    print(f"calibrated {len(table)} classes for event-based F1 on {len(timelines)} recordings "
          f"({sum(len(v) for v in truth.values())} true events); wrote {args.output}", file=sys.stderr)
    return 1 if failed else 0


def cmd_eval_events(args: argparse.Namespace) -> int:
    """Score an event table or score tables against the truth; print the table, optionally JSON and the PSD-ROC."""
    import json

    from ..errors import ConfigError
    from ..infer.calibrate import read_thresholds
    from ..infer.evaluate_events import evaluate_events, format_evaluation
    from ..utils import atomic_write_text

    if args.pred is None and args.scores_dir is None:
        raise ConfigError("give --pred EVENTS.tsv (from `events --format dcase`) or --scores-dir DIR (from "
                          "`events --scores-dir`), or both")
    if args.plot and args.scores_dir is None:
        raise ConfigError("--plot draws the PSD-ROC, which needs score tables: add --scores-dir")
    threshold = read_thresholds(args.thresholds) if args.thresholds else args.threshold
    result = evaluate_events(args.truth, pred_path=args.pred, scores_dir=args.scores_dir,
                             durations_path=args.durations, threshold=threshold)
    sys.stdout.write(format_evaluation(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(with_roc=True), indent=2) + "\n")
    if args.plot:
        from ..infer.plots import plot_psd_roc

        plot_psd_roc(result.psd_roc, {"psds1": result.psds1, "psds2": result.psds2}, args.plot,
                     title=f"PSD-ROC, {result.files} file(s), {result.truth_events} true events")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Draw the explanation of one model window of FILE as a PNG."""
    from ..audio.io import read_window
    from ..infer.explain import check_method, explain
    from ..infer.plots import plot_explanation

    refuse_existing(args.output, args.force)
    device = inference_device(args.device, args.precision)
    model = load_for_inference(args.checkpoint, args.precision, torch_only=True, verbose=args.verbose,
                               device=device).to(device)
    check_method(args.method, args.class_name, model.labels)  # before decoding any audio
    waveform = read_window(args.file, model.frontend.sample_rate, args.start, model.frontend.input_samples)
    expl = explain(model, waveform, sample_rate=model.frontend.sample_rate, class_name=args.class_name,
                   method=args.method, top_k=args.top_k)
    expl.start_s = args.start if args.start else 0.0
    plot_explanation(expl, args.output, width_px=args.width, height_px=args.height)
    tops = ", ".join(f"{label} {score:.3f}" for label, score in expl.labels)
    what = f"{expl.method} for {expl.class_name}" if expl.class_name else f"{expl.method}, class-agnostic"
    print(f"wrote {args.output} ({what}; top: {tops})", file=sys.stderr)
    return 0
