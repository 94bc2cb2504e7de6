"""`ast-audio serve`: the HTTP service and web page (ast_audio.serve), a thin shell over `run_server`."""

from __future__ import annotations

import argparse

from . import add_checkpoint_arg, add_precision_arg, positive_float, positive_int


def port_number(text: str) -> int:
    """argparse type: a TCP port 0-65535 (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return value


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
    serve.add_argument("--max-upload-mb", type=positive_float, default=20.0, metavar="MB",
                       help="largest request body in MiB; larger uploads get 413 (default 20)")
    serve.add_argument("--max-duration-s", type=positive_float, default=600.0, metavar="S",
                       help="longest audio in seconds, checked from the file header (default 600)")
    serve.add_argument("--upload-timeout-s", type=positive_float, default=60.0, metavar="S",
                       help="the request body must arrive within this many seconds, else 408 (default 60)")
    serve.add_argument("--workers-threads", type=positive_int, default=2, metavar="N",
                       help="inference worker threads; further requests queue (default 2)")
    serve.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
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
    from ..serve.app import ServeSettings, run_server

    thresholds = None
    if args.thresholds:
        from ..events import read_thresholds

        thresholds = read_thresholds(args.thresholds)
    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration_s,
                             upload_timeout_s=args.upload_timeout_s,
                             threads=args.workers_threads, batch_size=args.batch_size, precision=args.precision,
                             debug=bool(getattr(args, "debug", False)), thresholds=thresholds)
    return run_server(args.checkpoint, settings, host=args.host, port=args.port, log_level=args.log_level)
