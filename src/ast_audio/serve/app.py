"""HTTP service: a FastAPI app that tags, finds events in and explains uploaded audio, and serves a small page.

`create_app(model_or_checkpoint, settings)` builds the app around one model loaded once (the routes and the `Service`
they share); `ast_audio.serve.server.run_server` binds the port, loads the model and runs it on uvicorn (what
`ast-audio serve` calls). Limits are `limits.py`, the multipart form `forms.py`.

Endpoints (JSON errors are always `{"error": "<one line>"}`):
    GET  /healthz      status, number of labels, precision, version, limits, load
    POST /v1/tag       multipart `file` (+ top_k, window_s, hop_s)            -> TagResult.to_dict()
    POST /v1/events    multipart `file` (+ window_s, hop_s, threshold, median, min_duration, merge_gap, top_k
                       (top_n: its deprecated spelling), only, exclude) -> {"events": [...], "timeline": {...}}:
                       `EventPipeline`, the pipeline of `ast-audio events`, whose defaults (`EventConfig()`,
                       `event_windowing`) fill the fields left out; a frame model's timeline is its frame scores
    POST /v1/explain   multipart `file` (+ method, class, start_s)            -> image/png
    WS   /v1/stream    live PCM in, one JSON object per hop out (`stream.py`)
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
- A request whose client disconnects stops at its next batch (`Service.run_request` watches for the disconnect;
  `fair.TurnTakingTagger` raises `RequestAbandoned`), so abandoned uploads do not keep the model busy.
- `guard.RequestGuard` refuses foreign Host headers (DNS rebinding) and cross-origin requests before the body is
  read.

What the app enforces itself, in any ASGI server: the Host/Origin guard, the body size and upload time
(`BodyLimitMiddleware`), the form and work limits, the admission and fair turns, stopping abandoned requests, and
every limit of `/v1/stream` (sessions, per client, message and text sizes, rates, idle and session time). What only
`ast-audio serve` (`server.run_server`) adds, because an ASGI app cannot see it: the header timeout
(`protocol.HeaderTimeoutProtocol`: the app is called only once a head is complete), the connection limit
(`max_connections`), the WebSocket frame limit at the protocol (`ws_max_size`), and a log that cannot flood
(repeated accept() errors rate-limited). docs/serve.md lists them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import threading
import traceback
from collections.abc import Callable
from importlib import resources
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..audio.io import bytes_info, decode_bytes
from ..errors import AstAudioError
from ..infer.events import EventConfig
from ..infer.explain import check_method
from ..infer.explain_methods import DEFAULT_METHOD
from ..infer.formats import events_document, timeline_view
from ..infer.pipeline import EventPipeline
from ..infer.windowing import Windowing, event_windowing, tag_windowing
from ..labels import check_labels, parse_names, selected_classes
from ..model import AST
from ..utils import one_line
from ..version import __version__
from ..weights.checkpoint import load_model
from .fair import FairTurns, RequestAbandoned, TurnTakingTagger
from .forms import Upload, form_number, read_upload
from .guard import RequestGuard
from .limits import ApiError, BodyLimitMiddleware, ServeSettings
from .stream import Sessions, stream_session

# Served pages may load nothing from outside this server (the page must work offline).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}


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
        self._local = threading.local()  # the client a worker thread is serving (for its turns), and its `gone`
        self.tagger = TurnTakingTagger(model, self.turns, client=lambda: getattr(self._local, "client", ""),
                                       device=settings.device, abandoned=self._abandoned)
        self.abandoned_requests = 0  # requests stopped because their client disconnected (for /healthz)
        self.admission = anyio.CapacityLimiter(settings.max_active_requests)
        # matplotlib's global state is not thread-safe: one picture at a time.
        self.plot_lock = threading.Lock()

    async def run(self, client: str, func: Callable[..., Any], *args: Any, gone: threading.Event | None = None) -> Any:
        """Run `func(*args)` for `client` in a worker thread (at most `max_active_requests` at once, the others
        wait first come first served); its forward passes take turns with other clients'. The event loop stays
        free. Once `gone` is set the work stops at its next batch (`RequestAbandoned`)."""
        def work() -> Any:
            self._local.client, self._local.gone = client, gone
            try:
                self.tagger.check_abandoned()  # it may have left while the request waited for admission
                return func(*args)
            finally:
                self._local.client, self._local.gone = "", None

        return await anyio.to_thread.run_sync(work, limiter=self.admission)

    async def run_request(self, request: Request, func: Callable[..., Any], *args: Any) -> Any:
        """`run` for an HTTP request whose body has been read: while it runs, the request's `receive` is watched,
        and when the client disconnects the work stops at its next batch."""
        gone = threading.Event()

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone.set()

        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            try:
                result = await self.run(request.client.host if request.client else "", func, *args, gone=gone)
            except Exception as exc:  # raised below, outside the task group (which would wrap it in a group)
                failure = exc
            finally:
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    def _abandoned(self) -> bool:
        gone = getattr(self._local, "gone", None)
        return gone is not None and gone.is_set()

    def load(self) -> dict[str, int]:
        """What the service is doing now (for /healthz)."""
        turns = self.turns.statistics()
        return {"active_requests": int(self.admission.borrowed_tokens),
                "queued_requests": self.admission.statistics().tasks_waiting,
                "computing_batches": turns["computing"], "waiting_batches": turns["waiting"],
                "batches_done": turns["granted"], "abandoned_requests": self.abandoned_requests}

    def check_hop(self, windowing: Windowing) -> None:
        """422 if the hop is below `min_hop_fraction` of the window (a frame model's: of its columns, rounded down to
        whole columns, since each hop is one pass; AST's 101 columns at 0.1 give 1 s)."""
        fraction, rate = self.settings.min_hop_fraction, windowing.rate
        if windowing.column is not None:
            columns = windowing.window // windowing.column
            least = max(1, math.floor(fraction * columns + 1e-9)) * windowing.column
            if windowing.hop < least:
                raise ApiError(422, f"hop_s={windowing.hop_s:g} s is below the {least / rate:g} s allowed for this "
                                    f"frame model (min_hop_fraction {fraction:g} x its {columns} columns): each hop "
                                    f"is one pass; use hop_s >= {least / rate:g}, or start the server with a "
                                    "smaller --min-hop-fraction")
        elif windowing.hop + 0.5 < fraction * windowing.window:  # half a sample of slack: hop_s was rounded
            least = fraction * windowing.window_s
            raise ApiError(422, f"hop_s={windowing.hop_s:g} s is below the {least:g} s allowed for window_s="
                                f"{windowing.window_s:g} s (min_hop_fraction {fraction:g} x window_s): more overlap "
                                f"multiplies the work; use hop_s >= {least:g}, or start the server with a smaller "
                                "--min-hop-fraction")

    def check_windows(self, name: str, num_samples: int, windowing: Windowing) -> None:
        """422 if `num_samples` at the model rate give more than `max_windows` windows, naming a hop that fits."""
        limit, rate, window = self.settings.max_windows, windowing.rate, windowing.window
        count = windowing.count(num_samples)
        if count <= limit:
            return
        fix = "a shorter file"
        if limit > 1:
            least_hop = -(-(num_samples - window) // (limit - 1))  # ceil: the smallest hop giving <= limit windows
            if least_hop <= window:
                fix = f"hop_s >= {math.ceil(least_hop / rate * 1000) / 1000:g}, " + fix
        raise ApiError(422, f"{name}: {num_samples / rate:.2f} s with window_s={windowing.window_s:g} s and hop_s="
                            f"{windowing.hop_s:g} s gives {count} windows, more than the {limit} allowed per request "
                            f"(max_windows); use {fix}, or start the server with a larger --max-windows")

    def decode_windowed(self, upload: Upload, windowing: Windowing) -> torch.Tensor:
        """Check the window count from the header (before decoding), decode, check it again on the samples."""
        info = bytes_info(upload.data, upload.name)  # undecodable -> AudioInputError -> 422
        if info.sample_rate > 0 and info.frames > 0:  # mp3 headers estimate frames: checked exactly below too
            self.check_windows(upload.name, round(info.frames * windowing.rate / info.sample_rate), windowing)
        waveform = self.decode(upload)
        self.tagger.check_abandoned()
        self.check_windows(upload.name, waveform.shape[0], windowing)
        return waveform

    def decode(self, upload: Upload) -> torch.Tensor:
        return decode_bytes(upload.data, sample_rate=self.tagger.sample_rate,
                            max_duration_s=self.settings.max_duration_s, name=upload.name)

    # -- work done in worker threads ----------------------------------------------------------------------------

    def tag(self, upload: Upload, top_k: int, windowing: Windowing) -> bytes:
        waveform = self.decode_windowed(upload, windowing)
        result = self.tagger.tag(waveform, top_k=top_k, windowing=windowing,
                                 batch_size=self.settings.batch_size, names=[upload.name],
                                 sample_rate=self.tagger.sample_rate)[0]
        return _json_bytes(result.to_dict())

    def events(self, upload: Upload, pipeline: EventPipeline, top_k: int) -> bytes:
        waveform = self.decode_windowed(upload, pipeline.windowing)
        if pipeline.frames:  # frame scoring runs the model directly: the request's passes are one turn
            with self.turns.turn(self._local.client):
                result = pipeline.run(waveform, name=upload.name, sample_rate=self.tagger.sample_rate)
        else:  # each batch of windows takes its turn (TurnTakingTagger)
            result = pipeline.run(waveform, name=upload.name, sample_rate=self.tagger.sample_rate)
        config, timeline = pipeline.config, result.timeline
        keep = selected_classes(timeline.labels, config.only, config.exclude)
        view = timeline_view(timeline, result.events, top_k, config.threshold, keep=keep,
                             thresholds=config.thresholds)
        return _json_bytes({**events_document(upload.name, timeline, result.events), "timeline": view})

    def explain_png(self, upload: Upload, class_name: str | None, start_s: float,
                    method: str = DEFAULT_METHOD) -> bytes:
        from ..infer.explain import explain
        from ..infer.plots import plot_explanation

        waveform = self.decode(upload)
        self.tagger.check_abandoned()
        with self.turns.turn(self._local.client):  # one model input, forward (and backward): one turn
            self.tagger.check_abandoned()
            explanation = explain(self.model, waveform, sample_rate=self.tagger.sample_rate, class_name=class_name,
                                  method=method, start_s=start_s)
        buffer = io.BytesIO()
        with self.plot_lock:
            plot_explanation(explanation, buffer)
        return buffer.getvalue()


def _load_static() -> dict[str, bytes]:
    folder = resources.files("ast_audio.serve") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def _resolve_model(model_or_checkpoint: AST | str | os.PathLike, precision: str, device: str) -> AST:
    if isinstance(model_or_checkpoint, AST):
        return model_or_checkpoint
    return load_model(model_or_checkpoint, precision=precision, device=device)


def create_app(model_or_checkpoint: AST | str | os.PathLike, settings: ServeSettings | None = None) -> FastAPI:
    """Build the service around one model: an `AST`, or a checkpoint `load_model` reads (loaded now, once).

    Raises:
        CheckpointError / ConfigError: the checkpoint cannot be loaded, or the settings are invalid.
    """
    settings = settings or ServeSettings()
    service = Service(_resolve_model(model_or_checkpoint, settings.precision, settings.device), settings)
    if settings.thresholds:
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

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestAbandoned)
    async def _abandoned(request: Request, exc: RequestAbandoned) -> Response:
        service.abandoned_requests += 1
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

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
                           "max_active_requests": settings.max_active_requests,
                           "stream_max_sessions": settings.stream_max_sessions,
                           "stream_max_message_kb": settings.stream_max_message_kb,
                           "stream_max_messages_per_s": settings.stream_max_messages_per_s,
                           "stream_max_speed": settings.stream_max_speed,
                           "stream_burst_s": settings.stream_burst_s,
                           "stream_max_session_s": settings.stream_max_session_s,
                           "stream_idle_timeout_s": settings.stream_idle_timeout_s,
                           "stream_max_sessions_per_client": settings.stream_max_sessions_per_client,
                           "stream_max_text_kb": settings.stream_max_text_kb,
                           "max_connections": settings.max_connections},
                "threads": settings.threads, "load": service.load()}

    @app.post("/v1/tag")
    async def tag(request: Request) -> Response:
        upload = await read_upload(request)
        top_k = form_number(upload.fields, "top_k", settings.top_k)
        windowing = tag_windowing(service.tagger.model, form_number(upload.fields, "window_s"),
                                  form_number(upload.fields, "hop_s"))  # ConfigError -> 422
        service.check_hop(windowing)
        body = await service.run_request(request, service.tag, upload, top_k, windowing)
        return Response(body, media_type="application/json")

    @app.post("/v1/events")
    async def events(request: Request) -> Response:
        upload = await read_upload(request)
        fields, labels = upload.fields, service.tagger.labels
        # A field left out keeps the default of `ast-audio events` (EventConfig(), event_windowing; median, min_duration
        # and merge_gap by the model's kind, EventConfig.for_kind, in the pipeline); every number is
        # checked against its range in ast_audio.config.OPTION_RANGES, as the CLI and the WebSocket check it.
        windowing = event_windowing(service.tagger.model, form_number(fields, "window_s"),
                                    form_number(fields, "hop_s"))
        service.check_hop(windowing)
        default = EventConfig()
        config = dataclasses.replace(
            default, threshold=form_number(fields, "threshold", default.threshold),
            median_windows=form_number(fields, "median", default.median_windows),
            min_duration_s=form_number(fields, "min_duration", default.min_duration_s),
            merge_gap_s=form_number(fields, "merge_gap", default.merge_gap_s),
            thresholds=settings.thresholds,
            only=tuple(parse_names(upload.lists["only"], labels)) if "only" in fields else default.only,
            exclude=tuple(parse_names(upload.lists.get("exclude", []), labels)))
        pipeline = EventPipeline(service.tagger, config, windowing=windowing, batch_size=settings.batch_size)
        top_k = form_number(fields, "top_k", 5, deprecated=("top_n",))  # classes in the timeline
        body = await service.run_request(request, service.events, upload, pipeline, top_k)
        return Response(body, media_type="application/json")

    @app.post("/v1/explain")
    async def explain(request: Request) -> Response:
        upload = await read_upload(request)
        class_name = upload.fields.get("class") or None
        if class_name is not None and class_name not in service.tagger.labels:
            raise ApiError(422, f"unknown class {class_name[:80]!r}; expected one of the model's "
                                f"{len(service.tagger.labels)} labels (see /v1/tag)")
        method = upload.fields.get("method") or DEFAULT_METHOD
        check_method(method[:40], class_name, service.tagger.labels)  # ConfigError: a 422 in one line
        start_s = form_number(upload.fields, "start_s", 0.0)
        png = await service.run_request(request, service.explain_png, upload, class_name, start_s, method)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    sessions = Sessions(settings.stream_max_sessions, settings.stream_max_sessions_per_client)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await stream_session(websocket, service, sessions, websocket.client.host if websocket.client else "")

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
