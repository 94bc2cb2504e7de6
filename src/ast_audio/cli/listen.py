"""`ast-audio listen`: tag the microphone, raw PCM on stdin or a file played in real time, hop by hop.

A thin shell over `ast_audio.infer.live.StreamingTagger`: this module only opens the source, moves blocks from a
reader thread to the tagger (so audio keeps arriving while a window is scored) and prints each hop.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..config import SAMPLE_RATE
from ..infer.names import DEFAULT_HYSTERESIS, DEFAULT_THRESHOLD, LIVE_FORMATS, PCM_FORMATS
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
from .events import odd_int

BAR = 24  # characters of a full score bar in the live view
SPARK = " ▁▂▃▄▅▆▇█"  # a frame model's column scores in the live view: 0 .. 1 in eighths
# Blocks a source that is not real time (stdin or a file without --realtime) may read ahead of the tagger; then its
# reader waits (back-pressure), so a fast pipe costs this much memory, not the whole stream (400 MB in: 2.8 GB).
QUEUED_BLOCKS = 64


def register(commands: argparse._SubParsersAction) -> None:
    """Add listen."""
    listen = commands.add_parser(
        "listen", help="tag live audio (microphone, PCM on stdin, a file in real time) as it arrives",
        description="Keep a rolling window of the model's context, score it every hop and print the labels and "
        "the events (events' rules, decided causally) as they open and close; a frame model's hops also carry "
        "the frame scores of the columns they completed. Latency = the hop plus one window's "
        "compute. Sources: the default microphone (needs the `live` extra: sounddevice + PortAudio), "
        "`--input -` raw PCM on stdin (e.g. ffmpeg -i rtsp://... -f s16le -ac 1 -ar 16000 - | ast-audio listen "
        "--input -), or `--input FILE [--realtime]`.")
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
                        "the window; a frame model: 1 s, its frame scores final at each hop); refused when shorter "
                        "than one window's measured compute")
    listen.add_argument("--allow-skip", action="store_true", help="accept a --hop shorter than one window's "
                        "compute: windows are skipped (and counted) to stay current")
    group = listen.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, default=DEFAULT_THRESHOLD, metavar="T",
                       help=f"event threshold for every class (default {DEFAULT_THRESHOLD})")
    group.add_argument("--thresholds", metavar="CSV", help="per-class thresholds from `ast-audio calibrate`")
    listen.add_argument("--hysteresis", type=option_type("hysteresis"), default=DEFAULT_HYSTERESIS, metavar="R",
                        help=f"low threshold = R x high (default {DEFAULT_HYSTERESIS})")
    listen.add_argument("--median", type=odd_int, default=1, metavar="N", help="median filter over N windows (odd; "
                        "adds N // 2 hops of delay to events; default 1 = off)")
    listen.add_argument("--min-duration", type=option_type("min_duration"), default=0.0, metavar="S",
                        help="events shorter than S seconds are never reported (default 0)")
    listen.add_argument("--merge-gap", type=option_type("merge_gap"), default=0.0, metavar="S",
                        help="merge events of a class at most S seconds apart (closing waits S; default 0)")
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


def _reader(put, produce) -> threading.Thread:
    """Run `produce(put)` in a daemon thread; errors reach the consumer as the exception object."""
    def target() -> None:
        try:
            produce(put)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            put(exc)
        else:
            put(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def open_microphone(rate: int, block: int, put) -> Any:
    """Start the default input device (mono at the model rate); one-line errors when sounddevice, PortAudio or an
    input device is missing."""
    from ..errors import AstAudioError

    hint = ("; install it with pip install 'ast-audio[live]' (and PortAudio, e.g. apt install libportaudio2), or "
            "read raw PCM from stdin with --input -")
    try:
        import sounddevice
    except ImportError:
        raise AstAudioError("listening to the microphone needs the sounddevice package, which is not installed"
                            + hint) from None
    except OSError as exc:  # sounddevice is there but the PortAudio library is not
        raise AstAudioError(f"listening to the microphone needs the PortAudio library ({exc})" + hint) from None
    try:
        sounddevice.query_devices(kind="input")
        stream = sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=block,
                                         callback=lambda data, frames, t, status: put(data.copy()))
        stream.start()
    except Exception as exc:  # noqa: BLE001 - PortAudio's errors (no device, busy device) as one line
        raise AstAudioError(f"cannot open a microphone: {exc}; check that an input device is connected, or read "
                            "raw PCM from stdin with --input -") from None
    return stream


def read_stdin(decoder, block_bytes: int, stop: threading.Event):
    def produce(put) -> None:
        fd = sys.stdin.buffer.fileno()
        while not stop.is_set():
            data = os.read(fd, block_bytes)  # returns what the pipe holds (up to block_bytes): no waiting for more
            if not data:
                return
            samples = decoder.decode(data)
            if samples.shape[0]:
                put(samples)
    return produce


def read_file(path: str, block_s: float, realtime: bool, stop: threading.Event):
    import soundfile as sf

    from ..audio.io import load_audio_info

    # One-line errors for a missing or broken file before anything starts. The file is read at its own rate and
    # channel count, so the tagger resamples and downmixes it as it would any other source.
    info = load_audio_info(path)

    def produce(put) -> None:
        frames = max(1, round(block_s * info.sample_rate))
        start = time.monotonic()
        done = 0
        with sf.SoundFile(path) as f:
            while not stop.is_set():
                data = f.read(frames, dtype="float32", always_2d=True)  # (n, channels)
                if not data.shape[0]:
                    return
                done += data.shape[0]
                if realtime:  # a block is "there" once its last sample would have been played
                    stop.wait(max(0.0, start + done / info.sample_rate - time.monotonic()))
                put(data)
    return produce, info


def blocks(q: queue.Queue) -> Iterator[tuple[Any, float]]:
    """(block, arrival of its oldest samples) from the queue: every block waiting is taken at once (so the tagger
    sees the newest audio and can skip what is too late), until the reader says the source ended."""
    import numpy as np

    while True:
        first = q.get()
        items = [first]
        while True:
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        arrived = min(t for _, t in items)
        data = [x for x, _ in items]
        end = next((i for i, x in enumerate(data) if x is None or isinstance(x, BaseException)), None)
        good = data if end is None else data[:end]
        if good:
            yield np.concatenate(good), arrived
        if end is not None:
            if isinstance(data[end], BaseException):
                raise data[end]
            return


# ----------------------------------------------------------------------------------------------------------------------
# Output


class LiveView:
    """The compact terminal view: redrawn in place on a terminal, one plain line per hop otherwise."""

    def __init__(self, top_k: int, keep: list[int], tty: bool, out=sys.stdout) -> None:
        self.top_k, self.keep, self.tty, self.out = top_k, keep, tty, out
        self.recent: list[str] = []  # the last closed events, newest first

    def show(self, hop) -> None:
        for e in hop.closed:
            self.recent.insert(0, f"{e.label} {e.onset_s:.2f}-{e.offset_s:.2f} s ({e.score:.2f})")
        del self.recent[5:]
        top = hop.top(self.top_k, self.keep)
        if not self.tty:
            parts = [f"{hop.end_s:8.2f} s"] + [f"{label} {score:.2f}" for label, score in top]
            parts += [f"+{e.label} @{e.onset_s:.2f}" for e in hop.opened]
            parts += [f"-{e.label} {e.onset_s:.2f}-{e.offset_s:.2f}" for e in hop.closed]
            if hop.skipped:
                parts.append(f"skipped {hop.skipped}")
            self.out.write("  ".join(parts) + "\n")
        else:
            width = max((len(label) for label, _ in top), default=0)
            lines = [f"ast-audio listen   {hop.end_s:8.2f} s   window {hop.end_s - hop.start_s:.2f} s   "
                     f"compute {hop.compute_s * 1000:.0f} ms   skipped {hop.skipped}", ""]
            lines += [f"  {label:<{width}} {'█' * round(score * BAR):<{BAR}} {score:.2f}{self.columns(hop, label)}"
                      for label, score in top]
            lines += ["", "  open:   " + (", ".join(hop.active) or "-"),
                      "  recent: " + ("; ".join(self.recent) or "-")]
            self.out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()

    @staticmethod
    def columns(hop, label: str) -> str:
        """A frame model's hop: the class's score in each of the hop's columns, one character each; else ''."""
        if hop.frames is None:
            return ""
        scores = hop.frames[:, hop.labels.index(label)]
        return "  " + "".join(SPARK[round(float(v) * (len(SPARK) - 1))] for v in scores)


def cmd_listen(args: argparse.Namespace) -> int:
    """Stream the source through the tagger until it ends (or Ctrl-C), printing each hop."""
    from ..errors import AstAudioError
    from ..infer.calibrate import read_thresholds
    from ..infer.events import EventConfig
    from ..infer.live import PcmDecoder, StreamingTagger, is_frame_model, live_plan, measure_window_s
    from ..labels import check_labels, parse_names, selected_classes
    from .args import load_tagger

    tagger = load_tagger(args)
    window, hop = live_plan(tagger, args.window, args.hop)
    unit = "hop" if is_frame_model(tagger) else "window"  # what one pass scores
    labels = tagger.labels
    config = EventConfig(threshold=args.threshold,
                         thresholds=read_thresholds(args.thresholds) if args.thresholds else None,
                         hysteresis=args.hysteresis, median_windows=args.median, min_duration_s=args.min_duration,
                         merge_gap_s=args.merge_gap,
                         only=tuple(parse_names(args.only, labels)) if args.only else None,
                         exclude=tuple(parse_names(args.exclude, labels)) if args.exclude else ())
    if config.thresholds:
        check_labels(list(config.thresholds), labels, where=args.thresholds)
    keep = selected_classes(labels, config.only, config.exclude)
    if args.hop is not None and not args.allow_skip:  # a hop the user chose: can this CPU score a window that fast?
        took = measure_window_s(tagger, window)
        if hop / tagger.sample_rate < took:
            raise AstAudioError(f"--hop {args.hop:g} s is shorter than one window's compute here ({took:.3f} s "
                                f"measured for a {window / tagger.sample_rate:g} s window, precision "
                                f"{args.precision}); use --hop {took * 1.2:.3f} or more, a cheaper --precision, or "
                                "--allow-skip to skip windows")

    # Live sources (the microphone's callback must never block; --realtime) drop late windows instead of waiting.
    q: queue.Queue = queue.Queue(maxsize=0 if args.input is None or args.realtime else QUEUED_BLOCKS)

    def put(item: Any) -> None:
        while True:  # a bounded queue waits for room, until the consumer stops (then the reader ends too)
            try:
                q.put((item, time.monotonic()), timeout=0.1)
                return
            except queue.Full:
                if stop.is_set():
                    return

    mic = None
    stop = threading.Event()  # set when the loop below ends for any reason: the reader threads end too
    if args.input is None:
        rate, channels, drop_late = tagger.sample_rate, 1, True
        mic = open_microphone(rate, max(1, round(args.block * rate)), put)
    elif args.input == "-":
        rate, channels, drop_late = args.rate, args.channels, args.realtime
        decoder = PcmDecoder(args.dtype, args.channels)
        _reader(put, read_stdin(decoder, max(decoder.frame_bytes, round(args.block * rate) * decoder.frame_bytes),
                                stop))
    else:
        produce, info = read_file(args.input, args.block, args.realtime, stop)
        rate, channels, drop_late = info.sample_rate, info.channels, args.realtime
        _reader(put, produce)

    streamer = StreamingTagger(tagger, rate, channels, window_s=args.window, hop_s=args.hop, events=config,
                               drop_late=drop_late)
    view = LiveView(args.top_k, keep, tty=sys.stdout.isatty())

    def emit(hops) -> None:
        for hop_result in hops:
            if hop_result.warning:
                print(f"ast-audio: warning: {hop_result.warning}", file=sys.stderr)
            if args.format == "jsonl":
                sys.stdout.write(json.dumps(hop_result.to_dict(args.top_k, keep)) + "\n")
                sys.stdout.flush()
            else:
                view.show(hop_result)

    try:
        for block, arrived in blocks(q):
            emit(streamer.feed(block, arrived))
    except KeyboardInterrupt:
        pass  # the microphone runs until Ctrl-C: close the stream and report what it closed
    finally:  # also on BrokenPipeError (stdout's reader left), which cli.main turns into a quiet exit
        stop.set()
        if mic is not None:
            mic.stop()
            mic.close()
    emit(streamer.close())
    if streamer.skipped:
        print(f"ast-audio: skipped {streamer.skipped} of {streamer.index} {unit}s (scoring was slower than the hop)",
              file=sys.stderr)
    return 0
