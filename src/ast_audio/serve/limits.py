"""The service's limits: `ServeSettings` (every limit and knob, checked at start-up), `ApiError` (an error answered
as JSON {"error": ...} with its status), `BodyLimitMiddleware` (413 for a body over the size limit, 408 for one
slower than the upload timeout, enforced before anything reads the body) and `TokenBucket` (the rate limits of a
live stream: seconds of audio and messages per wall-clock second, each with a burst).

The per-request work limits (hop fraction, window count) are checked by `ast_audio.serve.app.Service` against these
settings with `ast_audio.infer.stream.window_count`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from ..errors import ConfigError
from ..model.precision import check_precision
from ..utils import one_line
from .defaults import (
    BATCH_SIZE,
    HEADER_TIMEOUT_S,
    MAX_ACTIVE_REQUESTS,
    MAX_CONNECTIONS,
    MAX_DURATION_S,
    MAX_MIN_HOP_FRACTION,
    MAX_UPLOAD_MB,
    MAX_WINDOWS,
    MIN_HOP_FRACTION,
    STREAM_BURST_S,
    STREAM_IDLE_TIMEOUT_S,
    STREAM_MAX_MESSAGE_KB,
    STREAM_MAX_MESSAGES_PER_S,
    STREAM_MAX_SESSION_S,
    STREAM_MAX_SESSIONS,
    STREAM_MAX_SESSIONS_PER_CLIENT,
    STREAM_MAX_SPEED,
    STREAM_MAX_TEXT_KB,
    THREADS,
    TOP_K,
    UPLOAD_TIMEOUT_S,
)
from .guard import check_host_names, check_origins, send_json_error

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and knobs of the service.

    Attributes:
        max_upload_mb: largest request body accepted, in MiB (multipart overhead included); larger -> 413.
        max_duration_s: longest audio accepted, in seconds, checked from the file header before decoding -> 422.
        upload_timeout_s: the whole request body must arrive within this many seconds of the request -> 408.
        threads: forward passes run at once; requests take turns batch by batch, round-robin between clients.
        batch_size: windows per forward pass.
        min_hop_fraction: smallest hop_s accepted, as a fraction of window_s (in (0, 0.5]) -> 422. Each second
            of audio is analysed window_s / hop_s times, so this bounds the work per second of audio.
        max_windows: most windows one request may ask for (from duration, window_s and hop_s) -> 422.
        max_active_requests: requests decoded and scored at once (each holds its decoded audio); the others
            wait, first come first served, with their upload already read.
        header_timeout_s: a connection's request line and headers must arrive within this many seconds
            (enforced by `run_server`'s HTTP protocol; the app alone cannot see a head before it is complete).
        allowed_hosts: Host header names served besides IP literals and localhost ("*" = any); `run_server`
            adds the name it was bound to.
        allow_origins: origins (scheme://host[:port]) whose cross-origin requests are served, with CORS headers,
            besides the server's own ("*" = any); other cross-origin requests get 403.
        precision: how a checkpoint is loaded ("auto", "fp32", "bf16", "int8", "ort-fp32", "ort-int8";
            `load_model(precision=...)`). A model passed in keeps its own; /healthz reports `model.precision`.
        device: where the model runs ("cpu", "cuda", "cuda:N"; `ast-audio serve --device`).
        top_k: default number of labels returned by /v1/tag.
        debug: put tracebacks of unexpected errors (500) into the JSON error body.
        thresholds: per-class event thresholds (e.g. `read_thresholds` of a `calibrate` CSV) used by /v1/events;
            the request's `threshold` applies to the classes not listed. Names are checked against the model.
        stream_max_sessions: live streams (/v1/stream) open at once; one more is refused (close 1013).
        stream_max_message_kb: largest binary PCM message of a stream, in KiB -> close 1009.
        stream_max_messages_per_s: messages a stream may send per second, with a burst of as many: in any T
            seconds at most stream_max_messages_per_s x (1 + T) messages -> close 1008. Stops floods of tiny
            messages; the audio they carry is limited by the next two.
        stream_max_speed: seconds of audio a stream may send per second of wall-clock time (x real time) ...
        stream_burst_s: ... beyond a burst of this many seconds of audio: in any T seconds at most
            stream_burst_s + stream_max_speed x T seconds of audio -> close 1008. A live source (real time) never
            reaches it; a client may send a file faster than real time, up to stream_max_speed, and the first
            stream_burst_s seconds of it at once.
        stream_max_session_s: longest a stream may stay open, in seconds -> close 1008.
        stream_idle_timeout_s: a stream that sends no audio (no message of at least one PCM frame) for this many
            seconds is closed -> 1008, so silent clients cannot hold the stream_max_sessions places.
        stream_max_sessions_per_client: live streams one client address may have open at once -> close 1013.
        stream_max_text_kb: largest text message of a stream (the first message with its class lists, {"end": true}),
            in KiB -> close 1009, checked before it is parsed.
        max_connections: open connections (HTTP and WebSocket) at once; a new one beyond it closes the connection
            that has waited longest for a request head, or is itself closed with 503 when none waits. Enforced by
            `run_server`'s protocol (an app mounted in another server gets that server's connection limits).
    """

    max_upload_mb: float = MAX_UPLOAD_MB
    max_duration_s: float = MAX_DURATION_S
    upload_timeout_s: float = UPLOAD_TIMEOUT_S
    threads: int = THREADS
    batch_size: int = BATCH_SIZE
    precision: str = "fp32"
    device: str = "cpu"
    top_k: int = TOP_K
    debug: bool = False
    thresholds: Mapping[str, float] | None = None
    min_hop_fraction: float = MIN_HOP_FRACTION
    max_windows: int = MAX_WINDOWS
    max_active_requests: int = MAX_ACTIVE_REQUESTS
    header_timeout_s: float = HEADER_TIMEOUT_S
    allowed_hosts: Sequence[str] = ()
    allow_origins: Sequence[str] = ()
    stream_max_sessions: int = STREAM_MAX_SESSIONS
    stream_max_message_kb: float = STREAM_MAX_MESSAGE_KB
    stream_max_messages_per_s: int = STREAM_MAX_MESSAGES_PER_S
    stream_max_speed: float = STREAM_MAX_SPEED
    stream_burst_s: float = STREAM_BURST_S
    stream_max_session_s: float = STREAM_MAX_SESSION_S
    stream_idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S
    stream_max_sessions_per_client: int = STREAM_MAX_SESSIONS_PER_CLIENT
    stream_max_text_kb: float = STREAM_MAX_TEXT_KB
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_duration_s", "upload_timeout_s", "header_timeout_s",
                     "stream_max_message_kb", "stream_max_session_s", "stream_max_speed", "stream_burst_s",
                     "stream_idle_timeout_s", "stream_max_text_kb"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("threads", "batch_size", "top_k", "max_windows", "max_active_requests", "stream_max_sessions",
                     "stream_max_messages_per_s", "stream_max_sessions_per_client", "max_connections"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        check_precision(self.precision)
        fraction = self.min_hop_fraction
        top = MAX_MIN_HOP_FRACTION
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= top):
            raise ConfigError(f"min_hop_fraction must be in (0, {top}] ({top} still accepts the default half-window "
                              f"hop), got {fraction!r}")
        # Validated and normalised here, so a bad entry fails at start-up, not on the first request.
        object.__setattr__(self, "allowed_hosts", check_host_names(self.allowed_hosts))
        object.__setattr__(self, "allow_origins", check_origins(self.allow_origins))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def stream_max_message_bytes(self) -> int:
        return int(self.stream_max_message_kb * 1024)

    @property
    def stream_max_text_bytes(self) -> int:
        return int(self.stream_max_text_kb * 1024)

class TokenBucket:
    """A rate limit with a burst: `burst` units at once, refilled at `rate` units per second up to `burst`, so any
    T seconds take at most burst + rate x T units. Times are `time.monotonic()` seconds; it starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.level, self.last = burst, now

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` units at time `now` if the bucket holds them (True); otherwise spend nothing (False)."""
        self.level = min(self.burst, self.level + (now - self.last) * self.rate)
        self.last = now
        if amount > self.level + 1e-9:  # a bucket refilled to exactly `amount` may hold it less a rounding error
            return False
        self.level -= amount
        return True


class ApiError(Exception):
    """An error answered with `status` and the JSON body {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)

class _BodyTooLarge(Exception):
    """Raised from inside `receive` when the request body passes the limit (caught by BodyLimitMiddleware)."""


class _BodyTooSlow(Exception):
    """Raised from inside `receive` when the body has not arrived within the upload timeout."""


def _too_large_message(limit: int) -> str:
    return (f"request body is larger than the {limit / MIB:g} MiB allowed (max_upload_mb); send a shorter or "
            "compressed file (flac, ogg), or start the server with a larger --max-upload-mb")


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse request bodies over `max_bytes` with 413, or slower than `timeout_s` with 408.

    A declared Content-Length over the limit is refused before the body is read. Otherwise the body is counted
    as the server receives it, and once the count passes the limit the request is abandoned (the app stops
    reading) and 413 is sent with `Connection: close`, so nothing past the limit is buffered or processed.
    A body still incomplete `timeout_s` after the request started is abandoned the same way with 408, so a client
    that trickles an upload cannot hold a request open for ever. Errors are JSON {"error": ...}.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = [value for key, value in scope["headers"] if key.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await send_json_error(send, 400, f"invalid Content-Length header {declared[0][:40]!r}")
                return
            if length > self.max_bytes:
                await send_json_error(send, 413, _too_large_message(self.max_bytes))
                return
        received = 0
        started = False
        complete = False
        deadline = anyio.current_time() + self.timeout_s if self.timeout_s is not None else math.inf

        async def limited_receive() -> dict:
            nonlocal received, complete
            if complete:  # the body is in; later receives only wait for a disconnect
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time()) if deadline < math.inf else None):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # cannot happen with these endpoints (they read the whole body first), but never send twice
                raise
            await send_json_error(send, 413, _too_large_message(self.max_bytes))
        except _BodyTooSlow:
            if started:
                raise
            await send_json_error(send, 408, f"the request body did not arrive within {self.timeout_s:g} s "
                                             "(upload_timeout_s); check the connection, or start the server with a "
                                             "larger --upload-timeout-s")
