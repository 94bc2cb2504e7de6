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

Errors are {"error": "<one line>"} followed by a close: 1008 (policy) for a bad first message, audio sent faster
than the stream's speed limit allows, too many messages per second or a session past its length; 1009 for a message
over the size limit; 1013 (try again later) when the server already has its most sessions. Limits are
`ServeSettings.stream_*` (docs/serve.md). The rate limits are token buckets (`limits.TokenBucket`) on what the
stream costs: seconds of audio per second (`stream_max_speed`, after a burst of `stream_burst_s`), so a client may
send faster than real time up to a bound, whatever its chunk size; and messages per second
(`stream_max_messages_per_s`, after a burst of as many), so floods of tiny messages are stopped too.

Each session is isolated: its own `StreamingTagger` (resampler, window, event state) and its own failure handling;
windows are scored in worker threads taking turns with the HTTP requests (`Service.run`, `fair.FairTurns`), and a
session that sends audio faster than it can be scored skips windows (`drop_late`) instead of queueing work, so no
session can hold the model for the others.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import AstAudioError
from ..infer.events import EventConfig
from ..infer.live import PCM_DTYPES, PcmDecoder, StreamingTagger, frame_grid, is_frame_model, live_plan
from ..infer.plots import class_colour
from ..labels import parse_names, selected_classes
from ..utils import one_line
from .limits import ApiError, ServeSettings, TokenBucket

MAX_RATE_HZ = 384000
MAX_CHANNELS = 32
START_FIELDS = {"rate", "format", "channels", "window_s", "hop_s", "threshold", "hysteresis", "median",
                "min_duration", "merge_gap", "only", "exclude", "top_k"}


class StreamRefused(Exception):
    """Ends a session with {"error": message} and the WebSocket close `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = one_line(message)


def _number(doc: dict, name: str, kind: type, default: Any, low: float | None = None,
            high: float | None = None) -> Any:
    value = doc.get(name, default)
    if value is default:
        return value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind is int:
        ok = float(value).is_integer()
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in [{low:g}, {high:g}]" if low is not None and high is not None else (
            f" >= {low:g}" if low is not None else "")
        raise StreamRefused(1008, f"first message: {name} must be {'an integer' if kind is int else 'a number'}"
                                  f"{bounds}, got {json.dumps(value)[:40]}")
    return kind(value)


def _names(doc: dict, name: str, labels: tuple[str, ...]) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise StreamRefused(1008, f"first message: {name} must be a list of class names")
    return tuple(parse_names(value, labels))


def start_session(service: Any, text: str | None) -> tuple[StreamingTagger, PcmDecoder, int, list[int]]:
    """Parse and check the first message (see the module docstring) -> (tagger, PCM decoder, top_k, kept classes).
    `service` is the app's `Service` (its tagger, window rules and settings)."""
    expected = ('expected a JSON text message first, such as {"rate": 16000, "format": "s16le", "channels": 1}, '
                "then binary PCM")
    if text is None:
        raise StreamRefused(1008, f"first message is binary; {expected}")
    try:
        doc = json.loads(text)
    except ValueError:
        raise StreamRefused(1008, f"first message is not JSON; {expected}") from None
    if not isinstance(doc, dict):
        raise StreamRefused(1008, f"first message is not a JSON object; {expected}")
    unknown = sorted(set(doc) - START_FIELDS)
    if unknown:
        raise StreamRefused(1008, f"first message: unknown field(s) {', '.join(unknown)[:80]}; expected some of "
                                  f"{', '.join(sorted(START_FIELDS))}")
    if "rate" not in doc:
        raise StreamRefused(1008, f"first message has no rate; {expected}")
    rate = _number(doc, "rate", int, None, low=1, high=MAX_RATE_HZ)
    channels = _number(doc, "channels", int, 1, low=1, high=MAX_CHANNELS)
    pcm = doc.get("format", "s16le")
    if pcm not in PCM_DTYPES:
        raise StreamRefused(1008, f"first message: format must be one of {', '.join(PCM_DTYPES)}, got "
                                  f"{json.dumps(pcm)[:40]}")
    window_s = _number(doc, "window_s", float, None, low=0)
    hop_s = _number(doc, "hop_s", float, None, low=0)
    labels = service.tagger.labels
    frames = is_frame_model(service.tagger)
    try:
        if frames:  # its own window and hop rules (`live_plan`), min_hop_fraction counted in columns
            check_frame_hop(service, hop_s)
        else:
            service.window_plan(window_s, hop_s)  # the Tagger's rules and min_hop_fraction, as for /v1/events
        config = EventConfig(threshold=_number(doc, "threshold", float, 0.5, low=0, high=1),
                             hysteresis=_number(doc, "hysteresis", float, 0.5, low=0, high=1),
                             median_windows=_number(doc, "median", int, 1, low=1),
                             min_duration_s=_number(doc, "min_duration", float, 0.0, low=0),
                             merge_gap_s=_number(doc, "merge_gap", float, 0.0, low=0),
                             thresholds=service.settings.thresholds,
                             only=_names(doc, "only", labels), exclude=_names(doc, "exclude", labels) or ())
        keep = selected_classes(labels, config.only, config.exclude)
        streamer = StreamingTagger(service.tagger, rate, channels, window_s=window_s, hop_s=hop_s, events=config,
                                   drop_late=True, batch_size=service.settings.batch_size)
    except ApiError as exc:
        raise StreamRefused(1008, f"first message: {exc.message}") from None
    except AstAudioError as exc:
        raise StreamRefused(1008, f"first message: {one_line(exc)}") from None
    top_k = _number(doc, "top_k", int, service.settings.top_k, low=1)
    return streamer, PcmDecoder(pcm, channels), top_k, keep


def check_frame_hop(service: Any, hop_s: float | None) -> None:
    """A frame model's hop against min_hop_fraction: at least that fraction of the input's columns, rounded down to
    whole columns (one pass per hop; AST's 101 columns at 0.1 give 1 s). ApiError (422) otherwise."""
    column, t_dim = frame_grid(service.tagger)
    hop = live_plan(service.tagger, None, hop_s)[1]
    least = max(1, math.floor(service.settings.min_hop_fraction * t_dim + 1e-9)) * column
    if hop < least:
        rate = service.tagger.sample_rate
        raise ApiError(422, f"hop_s={hop / rate:g} s is below the {least / rate:g} s allowed for this frame model "
                            f"(min_hop_fraction {service.settings.min_hop_fraction:g} x its {t_dim} columns): each hop "
                            f"is one pass; use hop_s >= {least / rate:g}, or start the server with a smaller "
                            "--min-hop-fraction")


class Sessions:
    """How many streams are open, against `stream_max_sessions` (all on the event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


async def _receive(websocket: WebSocket, timeout_s: float) -> dict:
    try:
        return await asyncio.wait_for(websocket.receive(), timeout=max(0.001, timeout_s))
    except asyncio.TimeoutError:
        raise StreamRefused(1008, "") from None  # the caller names which limit ran out


async def stream_session(websocket: WebSocket, service: Any, sessions: Sessions, client: str) -> None:
    """Serve one `/v1/stream` connection (see the module docstring)."""
    settings: ServeSettings = service.settings
    await websocket.accept()
    if sessions.open >= sessions.limit:
        await _refuse(websocket, StreamRefused(1013, f"the server already has {sessions.limit} live streams open "
                                                     "(stream_max_sessions); try again later, or start the server "
                                                     "with a larger --stream-max-sessions"))
        return
    sessions.open += 1
    started = time.monotonic()
    deadline = started + settings.stream_max_session_s
    queue: asyncio.Queue = asyncio.Queue()
    receiver: asyncio.Task | None = None
    try:
        try:
            first = await _receive(websocket, settings.header_timeout_s)
        except StreamRefused:
            raise StreamRefused(1008, f"no first message within {settings.header_timeout_s:g} s "
                                      "(header_timeout_s); send the JSON declaration right after connecting") from None
        if first["type"] == "websocket.disconnect":
            return
        streamer, decoder, top_k, keep = start_session(service, first.get("text"))
        await websocket.send_json({"ready": True, "window_s": round(streamer.window_s, 6),
                                   "hop_s": round(streamer.hop_s, 6), "sample_rate": streamer.rate,
                                   "labels": len(streamer.labels),
                                   "colours": {label: class_colour(i) for i, label in enumerate(streamer.labels)},
                                   **({"frames": True, "column_s": round(streamer.column / streamer.rate, 6)}
                                      if streamer.frames else {})})
        bytes_per_s = decoder.frame_bytes * streamer.input_rate  # of audio, as sent
        receiver = asyncio.create_task(_receiver(websocket, settings, deadline, queue, bytes_per_s))
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            chunks = [data for kind, data, _ in items if kind == "pcm"]
            if chunks:
                arrived = min(t for kind, _, t in items if kind == "pcm")
                block = decoder.decode(b"".join(chunks))
                hops = await service.run(client, streamer.feed, block, arrived)
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
    finally:
        if receiver is not None:
            receiver.cancel()
        sessions.open -= 1


async def _receiver(websocket: WebSocket, settings: ServeSettings, deadline: float, queue: asyncio.Queue,
                    bytes_per_s: int) -> None:
    """Read the client's messages as they come (timestamped, so late windows can be skipped), enforcing the
    message size, message rate, audio rate and session length; the session loop acts on what it puts on the queue.
    `bytes_per_s`: bytes of PCM per second of audio (rate x channels x sample size)."""
    limit = settings.stream_max_message_bytes
    start = time.monotonic()
    messages = TokenBucket(settings.stream_max_messages_per_s, settings.stream_max_messages_per_s, start)
    audio = TokenBucket(settings.stream_max_speed, settings.stream_burst_s, start)  # seconds of audio
    sent_s = 0.0  # audio received so far, for the refusal's message
    try:
        while True:
            try:
                message = await _receive(websocket, deadline - time.monotonic())
            except StreamRefused:
                limit_s = settings.stream_max_session_s
                queue.put_nowait(("refuse", StreamRefused(1008, f"the stream reached the {limit_s:g} s session "
                                                                "limit (stream_max_session_s); reconnect to go on"),
                                  0.0))
                return
            now = time.monotonic()
            if message["type"] == "websocket.disconnect":
                queue.put_nowait(("gone", None, now))
                return
            if not messages.take(1, now):
                queue.put_nowait(("refuse", StreamRefused(1008, f"more than {settings.stream_max_messages_per_s} "
                                                                "messages per second (stream_max_messages_per_s, "
                                                                "after a burst of as many); send larger chunks less "
                                                                "often"), now))
                return
            data = message.get("bytes")
            if data is None:
                text = message.get("text") or ""
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and doc.get("end") is True:
                    queue.put_nowait(("end", None, now))
                    return
                queue.put_nowait(("refuse", StreamRefused(1008, 'expected binary PCM messages or {"end": true}, got '
                                                                f"text {text[:40]!r}"), now))
                return
            if len(data) > limit:
                queue.put_nowait(("refuse", StreamRefused(1009, f"message of {len(data)} bytes is larger than the "
                                                                f"{limit} allowed (stream_max_message_kb); send "
                                                                "smaller chunks"), now))
                return
            seconds = len(data) / bytes_per_s
            sent_s += seconds
            if not audio.take(seconds, now):
                speed, burst = settings.stream_max_speed, settings.stream_burst_s
                queue.put_nowait(("refuse", StreamRefused(1008, f"audio is arriving faster than {speed:g} x real "
                                                                f"time after a burst of {burst:g} s "
                                                                f"(stream_max_speed, stream_burst_s): {sent_s:.1f} s "
                                                                f"of audio in {now - start:.1f} s; send at most "
                                                                f"{speed:g} s of audio per second"), now))
                return
            queue.put_nowait(("pcm", data, now))
    except WebSocketDisconnect:
        queue.put_nowait(("gone", None, time.monotonic()))


async def _refuse(websocket: WebSocket, exc: StreamRefused) -> None:
    """Send {"error": ...} and close with the refusal's code, unless the client has already gone."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await websocket.send_json({"error": exc.message})
        await websocket.close(exc.code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client left while we were answering
