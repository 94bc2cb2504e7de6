"""Live audio sources for `ast-audio listen` (and any caller that wants blocks as they arrive): the default
microphone, raw PCM on stdin, or a file read at its own pace or in real time.

A reader thread (or the microphone's callback) puts blocks on a queue; `LiveSource.blocks()` hands the consumer
every block waiting at once with the arrival time of its oldest samples, so a slow consumer sees the newest audio
and can skip what is too late. Errors of the reader reach the consumer as exceptions.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import AstAudioError

# Blocks a source that is not real time (stdin or a file without realtime) may read ahead of the consumer; then its
# reader waits (back-pressure), so a fast pipe costs this much memory, not the whole stream (400 MB in: 2.8 GB).
QUEUED_BLOCKS = 64
MIC_HINT = ("; install it with pip install 'ast-audio[live]' (and PortAudio, e.g. apt install libportaudio2), or "
            "read raw PCM from stdin with --input -")

Put = Callable[[Any], None]


class PcmDecoder(Protocol):
    """What stdin needs of a decoder (`ast_audio.infer.live.PcmDecoder`): bytes in, (n, channels) samples out."""

    frame_bytes: int

    def decode(self, data: bytes) -> Any: ...


class LiveSource:
    """One source's queue, reader and stop flag. `rate`, `channels`: of the blocks it yields; `drop_late`: a live
    source (microphone, real-time file or stdin) whose consumer should skip windows rather than fall behind."""

    def __init__(self, rate: int, channels: int, drop_late: bool, bounded: bool) -> None:
        self.rate, self.channels, self.drop_late = rate, channels, drop_late
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUED_BLOCKS if bounded else 0)
        self.stop = threading.Event()  # set by close(): the reader threads end too
        self.microphone: Any = None
        self.received = 0  # samples yielded so far: none at all is said, not a silent exit 0

    def put(self, item: Any) -> None:
        """Queue a block (or None at the end, or an exception); a bounded queue waits for room until close()."""
        while True:
            try:
                self.queue.put((item, time.monotonic()), timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    return

    def start(self, produce: Callable[[Put], None]) -> threading.Thread:
        """Run `produce(put)` in a daemon thread; its errors reach the consumer as the exception object."""
        def target() -> None:
            try:
                produce(self.put)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                self.put(exc)
            else:
                self.put(None)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def blocks(self) -> Iterator[tuple[Any, float]]:
        """(block, arrival of its oldest samples): every block waiting is taken at once, until the source ends."""
        import numpy as np

        while True:
            items = [self.queue.get()]
            while True:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            arrived = min(t for _, t in items)
            data = [x for x, _ in items]
            end = next((i for i, x in enumerate(data) if x is None or isinstance(x, BaseException)), None)
            good = data if end is None else data[:end]
            if good:
                block = np.concatenate(good)
                self.received += len(block)
                yield block, arrived
            if end is not None:
                if isinstance(data[end], BaseException):
                    raise data[end]
                return

    def close(self) -> None:
        self.stop.set()
        if self.microphone is not None:
            self.microphone.stop()
            self.microphone.close()


def open_microphone(rate: int, block: int, put: Put) -> Any:
    """Start the default input device (mono at `rate`); one-line errors when sounddevice, PortAudio or an input
    device is missing."""
    try:
        import sounddevice
    except ImportError:
        raise AstAudioError("listening to the microphone needs the sounddevice package, which is not installed"
                            + MIC_HINT) from None
    except OSError as exc:  # sounddevice is there but the PortAudio library is not
        raise AstAudioError(f"listening to the microphone needs the PortAudio library ({exc})" + MIC_HINT) from None
    try:
        sounddevice.query_devices(kind="input")
        stream = sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=block,
                                         callback=lambda data, frames, t, status: put(data.copy()))
        stream.start()
    except Exception as exc:  # noqa: BLE001 - PortAudio's errors (no device, busy device) as one line
        raise AstAudioError(f"cannot open a microphone: {exc}; check that an input device is connected, or read "
                            "raw PCM from stdin with --input -") from None
    return stream


def read_stdin(decoder: PcmDecoder, block_bytes: int, stop: threading.Event) -> Callable[[Put], None]:
    """A producer of decoded stdin blocks: whatever the pipe holds, up to `block_bytes`, no waiting for more."""
    def produce(put: Put) -> None:
        fd = sys.stdin.buffer.fileno()
        while not stop.is_set():
            data = os.read(fd, block_bytes)
            if not data:
                return
            samples = decoder.decode(data)
            if samples.shape[0]:
                put(samples)
    return produce


def read_file(path: str, block_s: float, realtime: bool, stop: threading.Event) -> tuple[Callable[[Put], None], Any]:
    """A producer of (n, channels) float32 blocks of `path` at its own rate (realtime: each block once its last
    sample would have been played), and the file's info. A missing or broken file fails here, before anything
    starts."""
    import soundfile as sf

    from .io import load_audio_info

    info = load_audio_info(path)

    def produce(put: Put) -> None:
        frames = max(1, round(block_s * info.sample_rate))
        start = time.monotonic()
        done = 0
        with sf.SoundFile(path) as f:
            while not stop.is_set():
                data = f.read(frames, dtype="float32", always_2d=True)  # (n, channels)
                if not data.shape[0]:
                    return
                done += data.shape[0]
                if realtime:
                    stop.wait(max(0.0, start + done / info.sample_rate - time.monotonic()))
                put(data)
    return produce, info


def is_live(path: str | None, realtime: bool) -> bool:
    """Whether the source runs at live pace (the microphone, `realtime`): its consumer must keep up or skip windows;
    a file or stdin read as fast as it comes only takes longer."""
    return path is None or realtime


def no_audio_message(path: str, dtype: str, rate: int) -> str:
    """What to say when a file or stdin (`path` "-") gave no samples at all."""
    if path == "-":
        return (f"no audio arrived on standard input; send {dtype} PCM at --rate {rate} (e.g. sox clip.wav -t raw "
                "-r 16000 -e signed -b 16 -c 1 - | ast-audio listen --input -)")
    return f"no audio arrived from {path}; expected an audio file with samples"


def open_source(path: str | None, *, block_s: float, realtime: bool, microphone_rate: int,
                decoder: PcmDecoder | None = None, pcm_rate: int = 0, pcm_channels: int = 1) -> LiveSource:
    """Start the source: the microphone (`path` None, mono at `microphone_rate`), PCM on stdin (`path` "-", decoded
    by `decoder` at `pcm_rate`) or a file. Live sources (the microphone's callback must never block; `realtime`)
    drop late windows instead of waiting; the others are read ahead at most QUEUED_BLOCKS blocks."""
    live = is_live(path, realtime)
    if path is None:
        source = LiveSource(microphone_rate, 1, drop_late=live, bounded=not live)
        source.microphone = open_microphone(microphone_rate, max(1, round(block_s * microphone_rate)), source.put)
    elif path == "-":
        if decoder is None:
            raise AstAudioError("reading PCM from stdin needs a decoder")
        source = LiveSource(pcm_rate, pcm_channels, drop_late=live, bounded=not live)
        block_bytes = max(decoder.frame_bytes, round(block_s * pcm_rate) * decoder.frame_bytes)
        source.start(read_stdin(decoder, block_bytes, source.stop))
    else:
        stop = threading.Event()
        produce, info = read_file(path, block_s, realtime, stop)
        source = LiveSource(info.sample_rate, info.channels, drop_late=live, bounded=not live)
        source.stop = stop
        source.start(produce)
    return source
