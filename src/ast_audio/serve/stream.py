"""WebSocket `/v1/stream`: live tagging of PCM sent by a client (a microphone in the page, a script), hop by hop.

Protocol (every server message is one JSON text message):
1. The client sends one JSON text message declaring its audio and options:
   {"rate": 48000, "format": "s16le" | "f32le", "channels": 1, and optionally "window_s", "hop_s", "threshold",
   "hysteresis", "median", "min_duration", "merge_gap", "only": [...], "exclude": [...], "top_k"}.
   The server answers {"ready": true, "window_s", "hop_s", "sample_rate", "labels", "colours"} (or an error, then
   closes); "labels" is the number of classes, "colours" maps each class to its colour in every picture.
2. The client sends binary messages of interleaved PCM (any length, frames may be split between messages).
   For each hop the server sends `LiveHop.to_dict()` (window times, top labels, events opened and closed, skipped).
   With a frame model (`ast_audio.infer.live`: each hop's frame columns are final when it arrives) "ready" adds
   "frames": true and "column_s", and every hop a "frames" object: the columns it completed, on the file path's
   grid ("first" column, "start_s", "end_s", "column_s"), with the scores of its top classes per column ("classes",
   "scores"); window_s is the input's columns, no "window_s" may be sent, and hop_s defaults to 1 s.
3. The client sends {"end": true} (or just closes): the server sends the last hops (events closed by the end of the
   stream), then {"done": true, "windows": N, "skipped": S} and closes normally.

Errors are {"error": "<one line>"} followed by a close: 1008 (policy) for a bad first message (every field is
checked: numbers against `ast_audio.config.OPTION_RANGES`, the same ranges as the HTTP form and the CLI), audio sent
faster than the stream's speed limit allows, too many messages per second, no audio for `stream_idle_timeout_s` or
a session past its length; 1009 for a binary message over `stream_max_message_kb` or a text message over
`stream_max_text_kb`; 1013 (try again later) when the server already has its most sessions, or this client its
`stream_max_sessions_per_client`; 1011 for a bug (logged). Limits are
`ServeSettings.stream_*` (docs/serve.md). The rate limits are token buckets (`limits.TokenBucket`) on what the
stream costs: seconds of audio per second (`stream_max_speed`, after a burst of `stream_burst_s`), so a client may
send faster than real time up to a bound, whatever its chunk size; and messages per second
(`stream_max_messages_per_s`, after a burst of as many), so floods of tiny messages are stopped too.

Work and memory per message are bounded where they enter: the input rate is 8-192 kHz (a 1 Hz stream resampled to
16 kHz would grow 16,000 x), each message is resampled in pieces of at most `MAX_FEED_SAMPLES` model-rate samples,
at most `QUEUED_MESSAGES` received messages wait for the scorer (then the socket is not read: back-pressure), and a
first message larger than `PARSE_ON_LOOP_CHARS` is parsed in a worker thread, not on the event loop.

Each session is isolated: its own `StreamingTagger` (resampler, window, event state) and its own failure handling;
windows are scored in worker threads taking turns with the HTTP requests (`Service.run`, `fair.FairTurns`), and a
session that sends audio faster than it can be scored skips windows (`drop_late`) instead of queueing work, so no
session can hold the model for the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..config import check_option
from ..errors import AstAudioError, ConfigError
from ..infer.events import EventConfig
from ..infer.live import PCM_DTYPES, LiveHop, PcmDecoder, StreamingTagger
from ..infer.names import DEFAULT_HYSTERESIS, DEFAULT_THRESHOLD
from ..infer.plots import class_colour
from ..infer.windowing import live_windowing
from ..labels import MAX_NAMES, parse_names, selected_classes
from ..utils import one_line
from .limits import ApiError, ServeSettings, TokenBucket

logger = logging.getLogger("ast_audio.serve")

MAX_FEED_SAMPLES = 1 << 20  # model-rate samples one `StreamingTagger.feed` may add (4 MiB of float32)
QUEUED_MESSAGES = 16  # received messages waiting for the scorer before the socket is no longer read
PARSE_ON_LOOP_CHARS = 4096  # a longer first message is parsed in a worker thread
START_FIELDS = {"rate", "format", "channels", "window_s", "hop_s", "threshold", "hysteresis", "median",
                "min_duration", "merge_gap", "only", "exclude", "top_k"}


class StreamRefused(Exception):
    """Ends a session with {"error": message} and the WebSocket close `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = one_line(message)


def _number(doc: dict, name: str, default: Any) -> Any:
    """The numeric field `name` (absent or null: `default`), checked against `OPTION_RANGES[name]` -> 1008."""
    value = doc.get(name)
    if value is None:
        return default
    try:
        return check_option(name, value)
    except ConfigError as exc:
        raise StreamRefused(1008, f"first message: {exc}") from None


def _names(doc: dict, name: str, labels: tuple[str, ...]) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    limit = max(MAX_NAMES, len(labels))
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value[:limit + 1])):
        raise StreamRefused(1008, f"first message: {name} must be a list of class names")
    if len(value) > limit:
        raise StreamRefused(1008, f"first message: {name} has {len(value)} names, more than the {limit} accepted; "
                                  "name fewer classes (an ontology name such as 'Music' stands for every class "
                                  "below it)")
    return tuple(parse_names(value, labels))


def check_text_size(text: str, settings: ServeSettings, what: str) -> None:
    """1009 if a text message is larger than `stream_max_text_kb` (checked before it is parsed)."""
    limit = settings.stream_max_text_bytes
    if len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8", "surrogatepass")) > limit):
        raise StreamRefused(1009, f"{what} is larger than the {limit} bytes allowed for a text message "
                                  "(stream_max_text_kb); send shorter lists of class names")


def start_session(service: Any, text: str | None) -> tuple[StreamingTagger, PcmDecoder, int, list[int]]:
    """Parse and check the first message (see the module docstring) -> (tagger, PCM decoder, top_k, kept classes).
    `service` is the app's `Service` (its tagger, window rules and settings)."""
    expected = ('expected a JSON text message first, such as {"rate": 16000, "format": "s16le", "channels": 1}, '
                "then binary PCM")
    if text is None:
        raise StreamRefused(1008, f"first message is binary; {expected}")
    check_text_size(text, service.settings, "the first message")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise StreamRefused(1008, f"first message is not JSON; {expected}") from None
    if not isinstance(doc, dict):
        raise StreamRefused(1008, f"first message is not a JSON object; {expected}")
    unknown = sorted(set(doc) - START_FIELDS)
    if unknown:
        raise StreamRefused(1008, f"first message: unknown field(s) {', '.join(unknown)[:80]}; expected some of "
                                  f"{', '.join(sorted(START_FIELDS))}")
    if "rate" not in doc:
        raise StreamRefused(1008, f"first message has no rate; {expected}")
    if doc["rate"] is None:
        raise StreamRefused(1008, f"first message: rate is null; {expected}")
    rate = _number(doc, "rate", None)
    channels = _number(doc, "channels", 1)
    pcm = doc.get("format", "s16le")
    if not (isinstance(pcm, str) and pcm in PCM_DTYPES):
        raise StreamRefused(1008, f"first message: format must be one of {', '.join(PCM_DTYPES)}, got "
                                  f"{one_line(json.dumps(pcm))[:40]}")
    window_s = _number(doc, "window_s", None)
    hop_s = _number(doc, "hop_s", None)
    top_k = _number(doc, "top_k", service.settings.top_k)
    labels = service.tagger.labels
    try:
        windowing = live_windowing(service.tagger.model, window_s, hop_s)  # as `ast-audio listen` builds it
        service.check_hop(windowing)  # min_hop_fraction, as for /v1/tag and /v1/events
        config = EventConfig(threshold=_number(doc, "threshold", DEFAULT_THRESHOLD),
                             hysteresis=_number(doc, "hysteresis", DEFAULT_HYSTERESIS),
                             median_windows=_number(doc, "median", None),  # None: the kind's default
                             min_duration_s=_number(doc, "min_duration", None),
                             merge_gap_s=_number(doc, "merge_gap", None),
                             thresholds=service.settings.thresholds,
                             only=_names(doc, "only", labels), exclude=_names(doc, "exclude", labels) or ())
        keep = selected_classes(labels, config.only, config.exclude)
        streamer = StreamingTagger(service.tagger, rate, channels, windowing=windowing, events=config,
                                   drop_late=True, batch_size=service.settings.batch_size)
    except ApiError as exc:
        raise StreamRefused(1008, f"first message: {exc.message}") from None
    except AstAudioError as exc:
        raise StreamRefused(1008, f"first message: {one_line(exc)}") from None
    return streamer, PcmDecoder(pcm, channels), top_k, keep


class Sessions:
    """The streams open, in all and per client address, against `stream_max_sessions` and
    `stream_max_sessions_per_client` (all on the event loop: no lock needed)."""

    def __init__(self, limit: int, per_client: int) -> None:
        self.limit, self.per_client = limit, per_client
        self.open = 0
        self.by_client: dict[str, int] = {}

    def refusal(self, client: str) -> StreamRefused | None:
        """Why one more stream of `client` is refused (1013), or None."""
        if self.open >= self.limit:
            return StreamRefused(1013, f"the server already has {self.limit} live streams open (stream_max_sessions); "
                                       "try again later, or start the server with a larger --stream-max-sessions")
        if self.by_client.get(client, 0) >= self.per_client:
            return StreamRefused(1013, f"this client already has {self.per_client} live streams open "
                                       "(stream_max_sessions_per_client); close one first, or start the server with "
                                       "a larger --stream-max-sessions-per-client")
        return None

    def enter(self, client: str) -> None:
        self.open += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    def leave(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]


class _TimedOut(Exception):
    """`_receive` got nothing in time (the caller names which limit ran out)."""


async def _receive(websocket: WebSocket, timeout_s: float) -> dict:
    try:
        return await asyncio.wait_for(websocket.receive(), timeout=max(0.001, timeout_s))
    except asyncio.TimeoutError:
        raise _TimedOut from None


def _feed(streamer: StreamingTagger, decoder: PcmDecoder, chunks: list[bytes], arrived: float) -> list[LiveHop]:
    """Decode and feed the queued messages one by one, in pieces whose resampled length is at most
    `MAX_FEED_SAMPLES`, so one step's memory grows neither with the queue nor with the rate ratio. (Worker thread.)"""
    piece = max(1, MAX_FEED_SAMPLES * streamer.input_rate // streamer.rate)  # input frames
    hops: list[LiveHop] = []
    for data in chunks:
        block = decoder.decode(data)  # (n, channels)
        for i in range(0, block.shape[0], piece):
            hops += streamer.feed(block[i:i + piece], arrived)
    return hops


async def _start(service: Any, text: str | None) -> tuple[StreamingTagger, PcmDecoder, int, list[int]]:
    """`start_session`, in a worker thread when the message is long (after its size check, on the loop)."""
    if text is None or len(text) <= PARSE_ON_LOOP_CHARS:
        return start_session(service, text)
    check_text_size(text, service.settings, "the first message")
    return await anyio.to_thread.run_sync(start_session, service, text)


async def stream_session(websocket: WebSocket, service: Any, sessions: Sessions, client: str) -> None:
    """Serve one `/v1/stream` connection (see the module docstring)."""
    settings: ServeSettings = service.settings
    await websocket.accept()
    refusal = sessions.refusal(client)
    if refusal is not None:
        await _refuse(websocket, refusal)
        return
    sessions.enter(client)
    started = time.monotonic()
    deadline = started + settings.stream_max_session_s
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUED_MESSAGES)  # full: the receiver waits (back-pressure)
    receiver: asyncio.Task | None = None
    try:
        try:
            first = await _receive(websocket, settings.header_timeout_s)
        except _TimedOut:
            raise StreamRefused(1008, f"no first message within {settings.header_timeout_s:g} s "
                                      "(header_timeout_s); send the JSON declaration right after connecting") from None
        if first["type"] == "websocket.disconnect":
            return
        streamer, decoder, top_k, keep = await _start(service, first.get("text"))
        await websocket.send_json({"ready": True, "window_s": round(streamer.window_s, 6),
                                   "hop_s": round(streamer.hop_s, 6), "sample_rate": streamer.rate,
                                   "labels": len(streamer.labels),
                                   "colours": {label: class_colour(i) for i, label in enumerate(streamer.labels)},
                                   **({"frames": True, "column_s": round(streamer.column / streamer.rate, 6)}
                                      if streamer.frames else {})})
        bytes_per_s = decoder.frame_bytes * streamer.input_rate  # of audio, as sent
        receiver = asyncio.create_task(_receiver(websocket, settings, deadline, queue, decoder.frame_bytes,
                                                 bytes_per_s))
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            chunks = [data for kind, data, _ in items if kind == "pcm"]
            if chunks:
                arrived = min(t for kind, _, t in items if kind == "pcm")
                hops = await service.run(client, _feed, streamer, decoder, chunks, arrived)
                for hop in hops:
                    await websocket.send_json(hop.to_dict(top_k, keep))
            last = items[-1]
            if last[0] == "refuse":
                raise last[1]
            if last[0] == "gone":
                return
            if last[0] == "end":
                for hop in await service.run(client, streamer.close):
                    await websocket.send_json(hop.to_dict(top_k, keep))
                await websocket.send_json({"done": True, "windows": streamer.index, "skipped": streamer.skipped})
                await websocket.close(1000)
                return
    except StreamRefused as exc:
        await _refuse(websocket, exc)
    except WebSocketDisconnect:
        pass
    except AstAudioError as exc:  # e.g. NaN samples in f32le: this session ends, the others go on
        await _refuse(websocket, StreamRefused(1008, one_line(exc)))
    except Exception as exc:  # a bug: logged with its traceback; the client gets one line and 1011
        logger.exception("live stream of %s failed", client)
        await _refuse(websocket, StreamRefused(1011, f"internal error: {one_line(exc) or type(exc).__name__}"))
    finally:
        if receiver is not None:
            receiver.cancel()
        sessions.leave(client)


async def _receiver(websocket: WebSocket, settings: ServeSettings, deadline: float, queue: asyncio.Queue,
                    frame_bytes: int, bytes_per_s: int) -> None:
    """Read the client's messages as they come (timestamped, so late windows can be skipped), enforcing the
    message size, message rate, audio rate, idle time and session length; the session loop acts on what it puts on
    the queue (and while the queue is full, nothing more is read). `frame_bytes`: bytes of one PCM frame (all
    channels); `bytes_per_s`: bytes of PCM per second of audio (rate x channels x sample size)."""
    limit = settings.stream_max_message_bytes
    start = time.monotonic()
    messages = TokenBucket(settings.stream_max_messages_per_s, settings.stream_max_messages_per_s, start)
    audio = TokenBucket(settings.stream_max_speed, settings.stream_burst_s, start)  # seconds of audio
    sent_s = 0.0  # audio received so far, for the refusal's message
    last_audio = start  # when the last message with at least one frame arrived

    async def refuse(code: int, message: str, now: float) -> None:
        await queue.put(("refuse", StreamRefused(code, message), now))

    try:
        while True:
            idle_deadline = last_audio + settings.stream_idle_timeout_s
            try:
                message = await _receive(websocket, min(deadline, idle_deadline) - time.monotonic())
            except _TimedOut:
                now = time.monotonic()
                if idle_deadline < deadline:
                    await refuse(1008, f"no audio for {settings.stream_idle_timeout_s:g} s (stream_idle_timeout_s); "
                                       "send PCM continuously, or reconnect when there is audio again", now)
                else:
                    await refuse(1008, f"the stream reached the {settings.stream_max_session_s:g} s session limit "
                                       "(stream_max_session_s); reconnect to go on", now)
                return
            now = time.monotonic()
            if message["type"] == "websocket.disconnect":
                await queue.put(("gone", None, now))
                return
            if not messages.take(1, now):
                await refuse(1008, f"more than {settings.stream_max_messages_per_s} messages per second "
                                   "(stream_max_messages_per_s, after a burst of as many); send larger chunks less "
                                   "often", now)
                return
            data = message.get("bytes")
            if data is None:
                text = message.get("text") or ""
                try:
                    check_text_size(text, settings, "a text message")
                    doc = json.loads(text)
                except StreamRefused as exc:
                    await queue.put(("refuse", exc, now))
                    return
                except (ValueError, RecursionError):
                    doc = None
                if isinstance(doc, dict) and doc.get("end") is True:
                    await queue.put(("end", None, now))
                    return
                await refuse(1008, f'expected binary PCM messages or {{"end": true}}, got text {text[:40]!r}', now)
                return
            if len(data) > limit:
                await refuse(1009, f"message of {len(data)} bytes is larger than the {limit} allowed "
                                   "(stream_max_message_kb); send smaller chunks", now)
                return
            seconds = len(data) / bytes_per_s
            sent_s += seconds
            if not audio.take(seconds, now):
                speed, burst = settings.stream_max_speed, settings.stream_burst_s
                await refuse(1008, f"audio is arriving faster than {speed:g} x real time after a burst of {burst:g} s "
                                   f"(stream_max_speed, stream_burst_s): {sent_s:.1f} s of audio in "
                                   f"{now - start:.1f} s; send at most {speed:g} s of audio per second", now)
                return
            await queue.put(("pcm", data, now))
            if len(data) >= frame_bytes:  # counted from when the scorer took it (the put may have waited)
                last_audio = time.monotonic()
    except WebSocketDisconnect:
        await queue.put(("gone", None, time.monotonic()))


async def _refuse(websocket: WebSocket, exc: StreamRefused) -> None:
    """Send {"error": ...} and close with the refusal's code, unless the client has already gone."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await websocket.send_json({"error": exc.message})
        await websocket.close(exc.code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client left while we were answering
