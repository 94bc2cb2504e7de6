"""`ast-audio listen`: tag the microphone, raw PCM on stdin or a file played in real time, hop by hop.

A thin shell: the sources and their reader thread are `ast_audio.audio.sources`, the tagging
`ast_audio.infer.live.StreamingTagger`, the terminal view `ast_audio.infer.live_view`; this module parses the
options, joins them and prints each hop.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

from ..config import SAMPLE_RATE
from ..errors import AstAudioError
from ..infer.names import (
    CLIP_DETECTION,
    DEFAULT_HYSTERESIS,
    DEFAULT_THRESHOLD,
    FRAME_DETECTION,
    LIVE_FORMATS,
    PCM_FORMATS,
)
from .args import (
    add_checkpoint_arg,
    add_class_filter_args,
    add_device_arg,
    add_precision_arg,
    option_type,
    positive_float,
    positive_int,
    unit_float,
)
from .events import kind_defaults, odd_int


def register(commands: argparse._SubParsersAction) -> None:
    """Add listen."""
    listen = commands.add_parser(
        "listen", help="tag live audio (microphone, PCM on stdin, a file in real time) as it arrives",
        description="Keep a rolling window of the model's context, score it every hop and print the labels and "
        "the events (events' rules, decided causally) as they open and close; a frame model's hops also carry "
        "the frame scores of the columns they completed. Latency = the hop plus one window's "
        "compute. Sources: the default microphone (needs the `live` extra: sounddevice + PortAudio), "
        "`--input -` raw PCM on stdin (e.g. ffmpeg -i rtsp://... -f s16le -ac 1 -ar 16000 - | ast-audio listen "
        "--input -), or `--input FILE [--realtime]`. " + kind_defaults(refinement=False) + ".")
    add_checkpoint_arg(listen)
    add_precision_arg(listen, default="auto")
    add_device_arg(listen)
    listen.add_argument("--input", metavar="SRC", help="'-' for raw PCM on stdin, or an audio file; default: the "
                        "microphone")
    listen.add_argument("--rate", type=option_type("rate"), default=SAMPLE_RATE,
                        help=f"--input -: sample rate in Hz (default {SAMPLE_RATE})")
    listen.add_argument("--channels", type=option_type("channels"), default=1, help="--input -: interleaved channels "
                        "(default 1; averaged)")
    listen.add_argument("--dtype", choices=PCM_FORMATS, default="s16le", help="--input -: sample format "
                        "(default s16le)")
    listen.add_argument("--realtime", action="store_true", help="a real-time source: --input FILE is played at "
                        "real-time pace; with --input - windows are skipped when scoring falls behind (the "
                        "microphone always is)")
    listen.add_argument("--window", type=positive_float, metavar="S", help="window length in seconds (default: "
                        "the model's input length; not for a frame model, whose passes read its whole input)")
    listen.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows (default: half "
                        "the window; a frame model: 1 s, its frame scores final at each hop); at live pace (the "
                        "microphone, --realtime) refused when shorter than one window's measured compute")
    listen.add_argument("--allow-skip", action="store_true", help="accept a --hop shorter than one window's "
                        "compute: windows are skipped (and counted) to stay current")
    group = listen.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, default=DEFAULT_THRESHOLD, metavar="T",
                       help=f"event threshold for every class (default {DEFAULT_THRESHOLD})")
    group.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate`")
    listen.add_argument("--hysteresis", type=option_type("hysteresis"), default=DEFAULT_HYSTERESIS, metavar="R",
                        help=f"low threshold = R x high (default {DEFAULT_HYSTERESIS})")
    clip, frame = CLIP_DETECTION, FRAME_DETECTION  # the defaults by kind of model (EventConfig.for_kind)
    listen.add_argument("--median", type=odd_int, metavar="N", help="median filter over N windows (a frame model: "
                        f"columns; odd; adds N // 2 of them of delay to events; default {clip.median_windows} for a "
                        f"clip model, {frame.median_windows} for a frame model)")
    listen.add_argument("--min-duration", type=option_type("min_duration"), metavar="S",
                        help="events shorter than S seconds are never reported (default "
                        f"{clip.min_duration_s:g} for a clip model, {frame.min_duration_s:g} for a frame model)")
    listen.add_argument("--merge-gap", type=option_type("merge_gap"), metavar="S",
                        help="merge events of a class at most S seconds apart (closing waits S; default "
                        f"{clip.merge_gap_s:g} for a clip model, {frame.merge_gap_s:g} for a frame model)")
    add_class_filter_args(listen, rollup=False)
    listen.add_argument("--top-k", type=positive_int, default=5, help="labels shown per hop (default 5)")
    listen.add_argument("--format", choices=LIVE_FORMATS, default="live", help="live (a redrawn view on a "
                        "terminal, one line per hop otherwise) or jsonl (one JSON object per hop)")
    listen.add_argument("--block", type=positive_float, default=0.05, metavar="S",
                        help="seconds of audio per read from the source (default 0.05)")
    listen.set_defaults(func=cmd_listen)


# ----------------------------------------------------------------------------------------------------------------------
# Sources: a reader thread puts (float32 (n, channels) block, arrival time) on a queue, then None at the end; it
# stops early once `stop` is set (the output's reader went away, Ctrl-C).


def _event_config(args: argparse.Namespace, labels: tuple[str, ...]) -> Any:
    """The EventConfig of listen's detection arguments (--thresholds names checked against the model)."""
    from ..infer.calibrate import read_thresholds
    from ..infer.events import EventConfig
    from ..labels import check_labels, parse_names

    config = EventConfig(threshold=args.threshold,
                         thresholds=read_thresholds(args.thresholds) if args.thresholds else None,
                         hysteresis=args.hysteresis, median_windows=args.median, min_duration_s=args.min_duration,
                         merge_gap_s=args.merge_gap,
                         only=tuple(parse_names(args.only, labels)) if args.only else None,
                         exclude=tuple(parse_names(args.exclude, labels)) if args.exclude else ())
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where=args.thresholds)
    return config


def _show_hops(hops: Any, args: argparse.Namespace, keep: list[int], view: Any) -> None:
    """Print each hop: one JSON line (--format jsonl) or the terminal view; a hop's warning goes to stderr."""
    for result in hops:
        if result.warning:
            print(f"ast-audio: warning: {result.warning}", file=sys.stderr)
        if args.format == "jsonl":
            sys.stdout.write(json.dumps(result.to_dict(args.top_k, keep)) + "\n")
            sys.stdout.flush()
        else:
            view.show(result)


def cmd_listen(args: argparse.Namespace) -> int:
    """Stream the source through the tagger until it ends (or Ctrl-C), printing each hop."""
    from ..audio.sources import is_live, no_audio_message, open_source
    from ..infer.live import PcmDecoder, StreamingTagger, check_hop_keeps_up, live_windowing
    from ..infer.live_view import LiveView
    from ..labels import selected_classes
    from .args import load_tagger

    tagger = load_tagger(args)
    windowing = live_windowing(tagger.model, args.window, args.hop)
    config = _event_config(args, tagger.labels)
    keep = selected_classes(tagger.labels, config.only, config.exclude)
    if args.hop is not None and not args.allow_skip and is_live(args.input, args.realtime):
        # a hop the user chose at live pace (the microphone, --realtime): can this CPU score a window that fast?
        check_hop_keeps_up(tagger, windowing, args.precision, args.hop)
    decoder = PcmDecoder(args.dtype, args.channels) if args.input == "-" else None
    source = open_source(args.input, block_s=args.block, realtime=args.realtime, microphone_rate=tagger.sample_rate,
                         decoder=decoder, pcm_rate=args.rate, pcm_channels=args.channels)
    streamer = StreamingTagger(tagger, source.rate, source.channels, windowing=windowing, events=config,
                               drop_late=source.drop_late)
    view = LiveView(args.top_k, keep, tty=sys.stdout.isatty())

    emit = functools.partial(_show_hops, args=args, keep=keep, view=view)

    try:
        for block, arrived in source.blocks():
            emit(streamer.feed(block, arrived))
    except KeyboardInterrupt:
        pass  # the microphone runs until Ctrl-C: close the stream and report what it closed
    finally:  # also on BrokenPipeError (stdout's reader left), which cli.main turns into a quiet exit
        source.close()
    if source.received == 0 and args.input is not None:
        raise AstAudioError(no_audio_message(args.input, args.dtype, args.rate))
    emit(streamer.close())
    if streamer.skipped:
        unit = "hop" if windowing.frames else "window"  # what one pass scores
        print(f"ast-audio: skipped {streamer.skipped} of {streamer.index} {unit}s (scoring was slower than the hop)",
              file=sys.stderr)
    return 0
