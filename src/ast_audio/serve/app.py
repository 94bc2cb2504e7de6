"""HTTP service: a FastAPI app that tags, finds events in and explains uploaded audio, and serves a small page.

`create_app(model_or_checkpoint, settings)` builds the app around one model loaded once; `run_server` binds the
port, loads the model and runs it on uvicorn (what `ast-audio serve` calls).

Endpoints (JSON errors are always `{"error": "<one line>"}`):
    GET  /healthz      status, number of labels, precision, version, limits, load
    POST /v1/tag       multipart `file` (+ top_k, window_s, hop_s)            -> TagResult.to_dict()
    POST /v1/events    multipart `file` (+ window_s, hop_s, threshold, median, min_duration, merge_gap, top_n,
                       only, exclude)
                       -> {"events": [...], "timeline": {...}}
    POST /v1/explain   multipart `file` (+ class, start_s)                    -> image/png
    GET  /             the page (index.html, app.js, style.css, all served from memory)

Why the pieces look the way they do:
- The body limit is a pure ASGI middleware so it runs before anything reads the body: a Content-Length above the
  limit is answered 413 without reading a byte; a chunked body (or any body) is counted as it arrives and the
  request is cut off with 413 once it passes the limit, so at most `max_upload_bytes` are ever buffered. The same
  middleware answers 408 when the body has not arrived within `upload_timeout_s`.
- Uploads are decoded with `ast_audio.audio.io.decode_bytes` from memory: no endpoint ever opens a path that a
  client names (the upload's filename is only echoed back as a display name).
- Decoding and inference run in worker threads (anyio, at most `max_active_requests` requests at once), so the
  event loop keeps answering /healthz and accepting uploads while a model runs. The model itself is shared batch
  by batch, round-robin between clients (`fair.FairTurns`, at most `threads` forward passes at once), so a short
  request never waits for a long one's whole computation.
- Work is bounded before it is done: a hop below `min_hop_fraction` of the window is refused with the form, and
  the number of windows (from the file header's duration, then again from the decoded audio) above `max_windows`
  before decoding; both are 422 naming the limit.
- `guard.RequestGuard` refuses foreign Host headers (DNS rebinding) and cross-origin requests before the body is
  read; `protocol.HeaderTimeoutProtocol` closes connections whose headers trickle in (run_server only).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import socket
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..audio.io import bytes_info, decode_bytes
from ..errors import AstAudioError, ConfigError
from ..model import AST
from ..model.precision import check_precision
from ..utils import one_line
from .fair import FairTurns, TurnTakingTagger
from .guard import RequestGuard, check_host_names, check_origins, send_json_error

MIB = 1024 * 1024
# Content types accepted for the `file` part. Browsers and curl label unknown files application/octet-stream,
# and a part without a type is left to the decoder; anything else that is not audio/* is refused with 415.
GENERIC_TYPES = ("application/octet-stream", "application/ogg", "")
MAX_NAME_CHARS = 200
# Served pages may load nothing from outside this server (the page must work offline).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # --host values that listen on every interface
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}


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
        top_k: default number of labels returned by /v1/tag.
        debug: put tracebacks of unexpected errors (500) into the JSON error body.
        thresholds: per-class event thresholds (e.g. `read_thresholds` of a `calibrate` CSV) used by /v1/events;
            the request's `threshold` applies to the classes not listed. Names are checked against the model.
    """

    max_upload_mb: float = 20.0
    max_duration_s: float = 600.0
    upload_timeout_s: float = 60.0
    threads: int = 2
    batch_size: int = 8
    precision: str = "fp32"
    top_k: int = 10
    debug: bool = False
    thresholds: Mapping[str, float] | None = None
    min_hop_fraction: float = 0.1
    max_windows: int = 600
    max_active_requests: int = 16
    header_timeout_s: float = 10.0
    allowed_hosts: Sequence[str] = ()
    allow_origins: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_duration_s", "upload_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("threads", "batch_size", "top_k", "max_windows", "max_active_requests"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        check_precision(self.precision)
        fraction = self.min_hop_fraction
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= 0.5):
            raise ConfigError(f"min_hop_fraction must be in (0, 0.5] (0.5 still accepts the default half-window hop), "
                              f"got {fraction!r}")
        # Validated and normalised here, so a bad entry fails at start-up, not on the first request.
        object.__setattr__(self, "allowed_hosts", check_host_names(self.allowed_hosts))
        object.__setattr__(self, "allow_origins", check_origins(self.allow_origins))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)


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


def _is_audio_type(content_type: str | None) -> bool:
    """True for audio/* and the generic types a browser or curl sends for a file it cannot name."""
    if content_type is None:
        return True
    main = content_type.split(";", 1)[0].strip().lower()
    return main.startswith("audio/") or main in GENERIC_TYPES


def _display_name(filename: str | None) -> str:
    """The upload's base name, for display only (it is never opened): no folders, no control characters."""
    if not filename:
        return "upload"
    name = PureWindowsPath(PurePosixPath(filename).name).name
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_NAME_CHARS]
    return name or "upload"


def _form_number(fields: Mapping[str, str], name: str, kind: type, default: Any = None,
                 low: float | None = None, high: float | None = None) -> Any:
    """Parse an optional form field as int or float within [low, high]; a bad value is a 422."""
    text = fields.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = kind(text.strip())
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ApiError(422, f"form field {name}={text[:40]!r} is not {expected}") from None
    if kind is float and not math.isfinite(value):
        raise ApiError(422, f"form field {name}={text[:40]!r} must be a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ApiError(422, f"form field {name}={value!r} must be {bounds}")
    return value


@dataclass
class Upload:
    """A validated upload: display name, encoded bytes, the other (text) form fields (last value, and every value
    of a repeated field in `lists`)."""

    name: str
    data: bytes
    fields: dict[str, str]
    lists: dict[str, list[str]]


async def read_upload(request: Request) -> Upload:
    """Parse the multipart body: one `file` part that looks like audio, plus text fields; errors are ApiErrors."""
    content_type = request.headers.get("content-type", "")
    # A url-encoded form is parsed too: it cannot hold a file, so it gets the "missing `file`" 422 below.
    if not content_type.lower().startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(415, f"expected a multipart/form-data body with an audio `file` field, got Content-Type "
                            f"{content_type[:80] or 'none'!r}; e.g. curl -F file=@clip.wav URL")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except StarletteHTTPException as exc:  # malformed multipart, too many parts
        raise ApiError(422, f"cannot parse the multipart body: {exc.detail}") from None
    try:
        upload = form.get("file")
        if upload is None:
            raise ApiError(422, "missing the multipart field `file`; send the audio as a file part named file "
                                "(e.g. curl -F file=@clip.wav URL)")
        if isinstance(upload, str):
            raise ApiError(422, "the `file` field is text, not a file part; send it as a file "
                                "(e.g. curl -F file=@clip.wav URL)")
        if not _is_audio_type(upload.content_type):
            raise ApiError(415, f"the uploaded file has content type {upload.content_type!r}, not audio; expected "
                                "audio/* (wav, flac, ogg, mp3, ...) or application/octet-stream")
        data = await upload.read()
        texts = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
        fields = dict(texts)
        lists: dict[str, list[str]] = {}
        for key, value in texts:
            lists.setdefault(key, []).append(value)
        name = _display_name(upload.filename)
    finally:
        await form.close()
    if not data:
        raise ApiError(422, f"{name}: the uploaded file is empty (0 bytes); expected encoded audio")
    return Upload(name=name, data=data, fields=fields, lists=lists)


def window_count(num_samples: int, window: int, hop: int) -> int:
    """`len(ast_audio.infer.window_starts(num_samples, window, hop))` without building the list (which, for a
    one-sample hop over a long file, would itself be the work being guarded against)."""
    if num_samples <= window:
        return 1
    return -(-(num_samples - window) // hop) + 1  # ceil((N - W) / H) regular starts, plus the end-aligned window


def _json_bytes(content: Any) -> bytes:
    """JSON as starlette's JSONResponse renders it; called in the worker thread, so a large answer is not
    serialised on the event loop."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


class Service:
    """The model and what every request needs: the Tagger, settings, admission limiter, turns and a plot lock."""

    def __init__(self, model: AST, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        self.turns = FairTurns(settings.threads)
        self._local = threading.local()  # the client a worker thread is serving, for its turns
        self.tagger = TurnTakingTagger(model, self.turns, client=lambda: getattr(self._local, "client", ""))
        self.admission = anyio.CapacityLimiter(settings.max_active_requests)
        # matplotlib's global state is not thread-safe: one picture at a time.
        self.plot_lock = threading.Lock()

    async def run(self, client: str, func: Callable[..., Any], *args: Any) -> Any:
        """Run `func(*args)` for `client` in a worker thread (at most `max_active_requests` at once, the others
        wait first come first served); its forward passes take turns with other clients'. The event loop stays
        free."""
        def work() -> Any:
            self._local.client = client
            try:
                return func(*args)
            finally:
                self._local.client = ""

        return await anyio.to_thread.run_sync(work, limiter=self.admission)

    def load(self) -> dict[str, int]:
        """What the service is doing now (for /healthz)."""
        turns = self.turns.statistics()
        return {"active_requests": int(self.admission.borrowed_tokens),
                "queued_requests": self.admission.statistics().tasks_waiting,
                "computing_batches": turns["computing"], "waiting_batches": turns["waiting"]}

    def window_plan(self, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
        """Check window_s / hop_s (Tagger rules, then min_hop_fraction) -> (window, hop) in samples; bad -> 422."""
        window, hop = self.tagger.window_and_hop(window_s, hop_s)  # ConfigError -> 422
        fraction, rate = self.settings.min_hop_fraction, self.tagger.sample_rate
        if hop + 0.5 < fraction * window:  # half a sample of slack: hop_s was rounded to samples
            least = fraction * window / rate
            raise ApiError(422, f"hop_s={hop / rate:g} s is below the {least:g} s allowed for window_s="
                                f"{window / rate:g} s (min_hop_fraction {fraction:g} x window_s): more overlap "
                                f"multiplies the work; use hop_s >= {least:g}, or start the server with a smaller "
                                "--min-hop-fraction")
        return window, hop

    def check_windows(self, name: str, num_samples: int, window: int, hop: int) -> None:
        """422 if `num_samples` at the model rate give more than `max_windows` windows, naming a hop that fits."""
        limit, rate = self.settings.max_windows, self.tagger.sample_rate
        count = window_count(num_samples, window, hop)
        if count <= limit:
            return
        fix = "a shorter file"
        if limit > 1:
            least_hop = -(-(num_samples - window) // (limit - 1))  # ceil: the smallest hop giving <= limit windows
            if least_hop <= window:
                fix = f"hop_s >= {math.ceil(least_hop / rate * 1000) / 1000:g}, " + fix
        raise ApiError(422, f"{name}: {num_samples / rate:.2f} s with window_s={window / rate:g} s and hop_s="
                            f"{hop / rate:g} s gives {count} windows, more than the {limit} allowed per request "
                            f"(max_windows); use {fix}, or start the server with a larger --max-windows")

    def decode_windowed(self, upload: Upload, window: int, hop: int) -> torch.Tensor:
        """Check the window count from the header (before decoding), decode, check it again on the samples."""
        info = bytes_info(upload.data, upload.name)  # undecodable -> AudioInputError -> 422
        if info.sample_rate > 0 and info.frames > 0:  # mp3 headers estimate frames: checked exactly below too
            self.check_windows(upload.name, round(info.frames * self.tagger.sample_rate / info.sample_rate),
                               window, hop)
        waveform = self.decode(upload)
        self.check_windows(upload.name, waveform.shape[0], window, hop)
        return waveform

    def decode(self, upload: Upload) -> torch.Tensor:
        return decode_bytes(upload.data, sample_rate=self.tagger.sample_rate,
                            max_duration_s=self.settings.max_duration_s, name=upload.name)

    # -- work done in worker threads ----------------------------------------------------------------------------

    def tag(self, upload: Upload, top_k: int, window_s: float | None, hop_s: float | None,
            plan: tuple[int, int]) -> bytes:
        waveform = self.decode_windowed(upload, *plan)
        result = self.tagger.tag(waveform, top_k=top_k, window_s=window_s, hop_s=hop_s,
                                 batch_size=self.settings.batch_size, names=[upload.name])[0]
        return _json_bytes(result.to_dict())

    def events(self, upload: Upload, window_s: float | None, hop_s: float | None, plan: tuple[int, int],
               config: Any, top_n: int) -> bytes:
        from ..infer.events import detect_events, score_stream, selected_classes

        waveform = self.decode_windowed(upload, *plan)
        timeline = score_stream(self.tagger, waveform, window_s=window_s, hop_s=hop_s,
                                batch_size=self.settings.batch_size)
        events = detect_events(timeline, config)
        return _json_bytes({"file": upload.name, "duration_s": round(float(timeline.duration_s), 6),
                            "window_s": float(timeline.window_s), "hop_s": float(timeline.hop_s),
                            "events": [event.to_dict() for event in events],
                            "timeline": timeline_json(timeline, events, top_n, config.threshold,
                                                      keep=selected_classes(timeline.labels, config.only,
                                                                            config.exclude),
                                                      thresholds=config.thresholds)})

    def explain_png(self, upload: Upload, class_name: str | None, start_s: float) -> bytes:
        from ..infer.explain import explain
        from ..infer.plots import plot_explanation

        waveform = self.decode(upload)
        with self.turns.turn(self._local.client):  # one model input, forward (and backward): one turn
            explanation = explain(self.model, waveform, class_name=class_name, start_s=start_s)
        buffer = io.BytesIO()
        with self.plot_lock:
            plot_explanation(explanation, buffer)
        return buffer.getvalue()


def timeline_json(timeline: Any, events: list[Any], top_n: int, threshold: float, keep: list[int] | None = None,
                  thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The window scores the page draws: the `top_n` classes by peak score (among `keep`, default all), plus every
    class with an event.

    Returns {"starts_s": [...], "ends_s": [...], "threshold": t, "classes": [{"label", "peak", "threshold",
    "scores"}]}, classes ordered by peak score, best first; a class's threshold is its entry in `thresholds`, else t.
    """
    thresholds = thresholds or {}
    scores = timeline.scores.float()  # (N windows, C)
    peaks = scores.max(dim=0).values if scores.shape[0] else torch.zeros(scores.shape[1])  # (C,)
    order = peaks.argsort(descending=True, stable=True).tolist()
    if keep is not None:
        kept = set(keep)
        order = [i for i in order if i in kept]
    chosen = order[:top_n]
    with_events = {timeline.labels.index(e.label) for e in events if e.label in timeline.labels}
    chosen += [i for i in order if i in with_events and i not in chosen]
    return {
        "starts_s": [round(float(s), 6) for s in timeline.starts_s.tolist()],
        "ends_s": [round(float(s), 6) for s in timeline.ends_s.tolist()],
        "threshold": threshold,
        "classes": [{"label": timeline.labels[i], "peak": float(peaks[i]),
                     "threshold": float(thresholds.get(timeline.labels[i], threshold)),
                     "scores": [round(float(v), 6) for v in scores[:, i].tolist()]} for i in chosen],
    }


def _load_static() -> dict[str, bytes]:
    folder = resources.files("ast_audio.serve") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def _resolve_model(model_or_checkpoint: AST | str | os.PathLike, precision: str) -> AST:
    if isinstance(model_or_checkpoint, AST):
        return model_or_checkpoint
    from ..weights.checkpoint import load_model

    return load_model(model_or_checkpoint, precision=precision)


def create_app(model_or_checkpoint: AST | str | os.PathLike, settings: ServeSettings | None = None) -> FastAPI:
    """Build the service around one model: an `AST`, or a checkpoint `load_model` reads (loaded now, once).

    Raises:
        CheckpointError / ConfigError: the checkpoint cannot be loaded, or the settings are invalid.
    """
    settings = settings or ServeSettings()
    service = Service(_resolve_model(model_or_checkpoint, settings.precision), settings)
    if settings.thresholds:
        from ..infer.events import check_labels

        check_labels(list(settings.thresholds), service.tagger.labels, where="the thresholds")
    static = _load_static()
    app = FastAPI(title="ast-audio", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    # Starlette wraps the last added middleware outermost: RequestGuard -> CORS -> BodyLimitMiddleware -> app.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, timeout_s=settings.upload_timeout_s)
    if settings.allow_origins:  # the guard has already refused other origins; these get CORS headers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], max_age=600)
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts, allow_origins=settings.allow_origins)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else ""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(AstAudioError)
    async def _user_error(request: Request, exc: AstAudioError) -> JSONResponse:
        return JSONResponse({"error": one_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this response, and uvicorn logs it with its traceback.
        body: dict[str, Any] = {"error": f"internal error: {one_line(exc) or type(exc).__name__}"}
        if settings.debug:
            body["traceback"] = traceback.format_exception(exc)
        return JSONResponse(body, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "labels": len(service.tagger.labels),
                "precision": service.model.precision, "sample_rate": service.tagger.sample_rate,
                "max_window_s": round(service.tagger.max_window_s, 6), "multi_label": service.model.multi_label,
                "limits": {"max_upload_mb": settings.max_upload_mb, "max_duration_s": settings.max_duration_s,
                           "upload_timeout_s": settings.upload_timeout_s, "header_timeout_s": settings.header_timeout_s,
                           "min_hop_fraction": settings.min_hop_fraction, "max_windows": settings.max_windows,
                           "max_active_requests": settings.max_active_requests},
                "threads": settings.threads, "load": service.load()}

    @app.post("/v1/tag")
    async def tag(request: Request) -> Response:
        upload = await read_upload(request)
        top_k = _form_number(upload.fields, "top_k", int, settings.top_k, low=1)
        window_s = _form_number(upload.fields, "window_s", float, None, low=0)
        hop_s = _form_number(upload.fields, "hop_s", float, None, low=0)
        plan = service.window_plan(window_s, hop_s)
        body = await service.run(client_of(request), service.tag, upload, top_k, window_s, hop_s, plan)
        return Response(body, media_type="application/json")

    @app.post("/v1/events")
    async def events(request: Request) -> Response:
        from ..infer.events import EventConfig, parse_names

        upload = await read_upload(request)
        fields, labels = upload.fields, service.tagger.labels
        window_s = _form_number(fields, "window_s", float, None, low=0)
        hop_s = _form_number(fields, "hop_s", float, None, low=0)
        plan = service.window_plan(window_s, hop_s)
        median = _form_number(fields, "median", int, 1, low=1)
        if median % 2 == 0:
            raise ApiError(422, f"form field median={median} must be odd (a centred median over windows)")
        config = EventConfig(threshold=_form_number(fields, "threshold", float, 0.5, low=0, high=1),
                             median_windows=median,
                             min_duration_s=_form_number(fields, "min_duration", float, 0.0, low=0),
                             merge_gap_s=_form_number(fields, "merge_gap", float, 0.0, low=0),
                             thresholds=settings.thresholds,
                             only=tuple(parse_names(upload.lists["only"], labels)) if "only" in fields else None,
                             exclude=tuple(parse_names(upload.lists.get("exclude", []), labels)))
        top_n = _form_number(fields, "top_n", int, 5, low=1)
        body = await service.run(client_of(request), service.events, upload, window_s, hop_s, plan, config, top_n)
        return Response(body, media_type="application/json")

    @app.post("/v1/explain")
    async def explain(request: Request) -> Response:
        upload = await read_upload(request)
        class_name = upload.fields.get("class") or None
        if class_name is not None and class_name not in service.tagger.labels:
            raise ApiError(422, f"unknown class {class_name[:80]!r}; expected one of the model's "
                                f"{len(service.tagger.labels)} labels (see /v1/tag)")
        start_s = _form_number(upload.fields, "start_s", float, 0.0, low=0)
        png = await service.run(client_of(request), service.explain_png, upload, class_name, start_s)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    def _static_response(name: str) -> Response:
        return Response(static[name], media_type=STATIC_FILES[name],
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/")
    async def index() -> Response:
        return _static_response("index.html")

    @app.get("/app.js")
    async def app_js() -> Response:
        return _static_response("app.js")

    @app.get("/style.css")
    async def style_css() -> Response:
        return _static_response("style.css")

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port before the model loads, so a taken port fails fast with a clear message."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r} ({exc.strerror}); use an address such as 127.0.0.1 "
                          "or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # lets a restart reuse a TIME_WAIT port only
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using it? "
                          "stop it or choose another --port (0 picks a free one)") from None
    sock.set_inheritable(True)
    return sock


def server_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_server(checkpoint: AST | str | os.PathLike, settings: ServeSettings, host: str = "127.0.0.1",
               port: int = 8000, log_level: str = "warning") -> int:
    """Bind host:port, load the model once, print one startup line with the URL, serve until interrupted.

    The Host names served are those of `settings.allowed_hosts` plus `host` (or, bound to every interface, this
    machine's host name); connections get `settings.header_timeout_s` for each request's headers.
    """
    import uvicorn

    from .protocol import HeaderTimeoutProtocol

    sock = bind_socket(host, port)
    try:
        bound_name = socket.gethostname() if host in WILDCARD_HOSTS else host
        settings = dataclasses.replace(settings, allowed_hosts=(*settings.allowed_hosts, bound_name))
        app = create_app(checkpoint, settings)
        service: Service = app.state.service
        source = checkpoint if not isinstance(checkpoint, AST) else "<model>"
        print(f"ast-audio serve: listening on {server_url(sock)} (checkpoint {source}, "
              f"{len(service.tagger.labels)} labels, {_precision_line(service.model)}, {settings.threads} inference "
              "threads; "
              f"limits {settings.max_upload_mb:g} MiB, {settings.max_duration_s:g} s)", file=sys.stderr, flush=True)
        config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"),
                                lifespan="off", timeout_graceful_shutdown=5,
                                http=HeaderTimeoutProtocol.with_header_timeout(settings.header_timeout_s))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _precision_line(model: Any) -> str:
    """"precision X" or, when it was chosen, "precision auto -> X: why"."""
    choice = getattr(model, "precision_choice", None)
    return choice.describe() if choice is not None else f"precision {model.precision}"


__all__ = ["ServeSettings", "create_app", "run_server", "bind_socket", "timeline_json", "window_count",
           "BodyLimitMiddleware"]
