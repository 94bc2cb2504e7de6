"""`ast-audio serve`: the HTTP service and web page (ast_audio.serve), a thin shell over `run_server`."""

from __future__ import annotations

import argparse

from ..serve import defaults as D
from .args import (
    add_checkpoint_arg,
    add_device_arg,
    add_precision_arg,
    inference_device,
    number,
    positive_float,
    positive_int,
)

port_number = number(int, low=0, high=65535, what="a port number 0-65535")
hop_fraction = number(float, low=0, high=D.MAX_MIN_HOP_FRACTION, low_open=True)


def name_list(text: str) -> list[str]:
    """argparse type: one or more comma-separated names (an option that may also be repeated)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated names, got {text!r}")
    return names


def register(commands: argparse._SubParsersAction) -> None:
    """Add `serve` to `commands`."""
    serve = commands.add_parser(
        "serve", help="HTTP service and web page: tag, events and explanation pictures of uploaded audio",
        description="Serve a model over HTTP: GET / (a page to upload or record audio), GET /healthz, POST /v1/tag, "
                    "/v1/events and /v1/explain (multipart field `file`). The model is loaded once at start-up; "
                    "one line with the URL is printed when the server is ready.")
    add_checkpoint_arg(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000; 0 = any free port)")
    add_precision_arg(serve)
    add_device_arg(serve)
    serve.add_argument("--max-upload-mb", type=positive_float, default=D.MAX_UPLOAD_MB, metavar="MB",
                       help="largest request body in MiB; larger uploads get 413 (default %(default)g)")
    serve.add_argument("--max-duration-s", type=positive_float, default=D.MAX_DURATION_S, metavar="S",
                       help="longest audio in seconds, checked from the file header (default %(default)g)")
    serve.add_argument("--upload-timeout-s", type=positive_float, default=D.UPLOAD_TIMEOUT_S, metavar="S",
                       help="the request body must arrive within this many seconds, else 408 (default %(default)g)")
    serve.add_argument("--workers-threads", type=positive_int, default=D.THREADS, metavar="N",
                       help="forward passes run at once; requests take turns batch by batch, round-robin between "
                            "clients (default %(default)g)")
    serve.add_argument("--batch-size", type=positive_int, default=D.BATCH_SIZE,
                       help="windows per forward pass (default %(default)g)")
    # Defaults: ast_audio.serve.defaults, the objects ServeSettings uses (no fastapi import here).
    serve.add_argument("--min-hop-fraction", type=hop_fraction, default=D.MIN_HOP_FRACTION, metavar="F",
                       help=f"smallest hop_s accepted, as a fraction of window_s, in (0, "
                             f"{D.MAX_MIN_HOP_FRACTION}]; smaller gets 422 "
                            "(default %(default)g: each second of audio is analysed at most 1/F times)")
    serve.add_argument("--max-windows", type=positive_int, default=D.MAX_WINDOWS, metavar="N",
                       help="most windows one request may ask for (duration, window_s and hop_s), checked from the "
                            "file header before decoding; more gets 422 (default %(default)g)")
    serve.add_argument("--max-active-requests", type=positive_int, default=D.MAX_ACTIVE_REQUESTS, metavar="N",
                       help="requests decoded and scored at once; the others wait their turn (default %(default)g)")
    serve.add_argument("--header-timeout-s", type=positive_float, default=D.HEADER_TIMEOUT_S, metavar="S",
                       help="a connection's request headers must arrive within this many seconds, else it is "
                            "closed (default %(default)g)")
    serve.add_argument("--allowed-hosts", type=name_list, action="extend", default=[], metavar="NAME[,NAME]",
                       help="Host header names to serve besides IP addresses, localhost and the --host name "
                            "(repeatable; * = any); other names get 400 (DNS-rebinding protection)")
    serve.add_argument("--allow-origin", type=name_list, action="extend", default=[], metavar="ORIGIN",
                       help="origin (scheme://host[:port]) whose cross-origin requests are served, with CORS headers "
                            "(repeatable; * = any); other cross-origin requests get 403")
    serve.add_argument("--stream-max-sessions", type=positive_int, default=D.STREAM_MAX_SESSIONS, metavar="N",
                       help="live streams (WebSocket /v1/stream) open at once (default %(default)g)")
    serve.add_argument("--stream-max-message-kb", type=positive_float, default=D.STREAM_MAX_MESSAGE_KB, metavar="KB",
                       help="largest PCM message of a live stream, in KiB (default %(default)g)")
    serve.add_argument("--stream-max-messages-per-s", type=positive_int, default=D.STREAM_MAX_MESSAGES_PER_S,
                       metavar="N",
                       help="messages a live stream may send per second, after a burst of as many (default "
                            "%(default)g)")
    serve.add_argument("--stream-max-speed", type=positive_float, default=D.STREAM_MAX_SPEED, metavar="X",
                       help="seconds of audio a live stream may send per second, i.e. x real time (default "
                            "%(default)g)")
    serve.add_argument("--stream-burst-s", type=positive_float, default=D.STREAM_BURST_S, metavar="S",
                       help="seconds of audio a live stream may send at once beyond --stream-max-speed "
                            "(default %(default)g)")
    serve.add_argument("--stream-max-session-s", type=positive_float, default=D.STREAM_MAX_SESSION_S, metavar="S",
                       help="longest a live stream may stay open, in seconds (default %(default)g)")
    serve.add_argument("--stream-idle-timeout-s", type=positive_float, default=D.STREAM_IDLE_TIMEOUT_S, metavar="S",
                       help="a live stream that sends no audio for this many seconds is closed (default %(default)g)")
    serve.add_argument("--stream-max-sessions-per-client", type=positive_int, default=D.STREAM_MAX_SESSIONS_PER_CLIENT,
                       metavar="N",
                       help="live streams one client address may have open at once (default %(default)g)")
    serve.add_argument("--stream-max-text-kb", type=positive_float, default=D.STREAM_MAX_TEXT_KB, metavar="KB",
                       help="largest text message of a live stream (the first one, with its class lists), in KiB "
                            "(default %(default)g)")
    serve.add_argument("--max-connections", type=positive_int, default=D.MAX_CONNECTIONS, metavar="N",
                       help="open connections at once; one more closes the connection idle longest, or gets 503 "
                            "when none is idle (default %(default)g; the file-descriptor limit is raised to fit)")
    serve.add_argument("--thresholds", metavar="CSV",
                       help="per-class event thresholds for /v1/events (a CSV from `ast-audio calibrate`); the "
                            "request's `threshold` applies to the other classes")
    serve.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="warning",
                       help="uvicorn log level; info and debug also log every request (default warning)")
    # Also accepted after the sub-command; SUPPRESS keeps a global `ast-audio --debug serve` from being reset.
    serve.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="tracebacks on start-up errors and in 500 responses")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind the port, load the checkpoint, serve until interrupted (Ctrl-C / SIGTERM stop it cleanly)."""
    from ..infer.calibrate import read_thresholds
    from ..serve.limits import ServeSettings
    from ..serve.server import run_server

    thresholds = None
    if args.thresholds:
        thresholds = read_thresholds(args.thresholds)
    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration_s,
                             upload_timeout_s=args.upload_timeout_s,
                             threads=args.workers_threads, batch_size=args.batch_size, precision=args.precision,
                             device=inference_device(args.device, args.precision),
                             debug=bool(getattr(args, "debug", False)), thresholds=thresholds,
                             min_hop_fraction=args.min_hop_fraction, max_windows=args.max_windows,
                             max_active_requests=args.max_active_requests, header_timeout_s=args.header_timeout_s,
                             allowed_hosts=tuple(args.allowed_hosts), allow_origins=tuple(args.allow_origin),
                             stream_max_sessions=args.stream_max_sessions,
                             stream_max_message_kb=args.stream_max_message_kb,
                             stream_max_messages_per_s=args.stream_max_messages_per_s,
                             stream_max_speed=args.stream_max_speed, stream_burst_s=args.stream_burst_s,
                             stream_max_session_s=args.stream_max_session_s,
                             stream_idle_timeout_s=args.stream_idle_timeout_s,
                             stream_max_sessions_per_client=args.stream_max_sessions_per_client,
                             stream_max_text_kb=args.stream_max_text_kb, max_connections=args.max_connections)
    return run_server(args.checkpoint, settings, host=args.host, port=args.port, log_level=args.log_level)
