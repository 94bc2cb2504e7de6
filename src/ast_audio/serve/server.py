"""Start-up of the service: bind the port first (a taken port fails fast), load the model once, print one line
with the URL, and run the app on uvicorn until interrupted. `ast-audio serve` calls `run_server`.

What `run_server` adds to the app (which an ASGI app cannot do itself; `create_app` mounted in another server gets
that server's own): the header timeout and the connection cap (`protocol.HeaderTimeoutProtocol`), a file-descriptor
limit raised to fit the cap, WebSocket frames bounded at the protocol (`ws_max_size`: the larger stream message limit
plus 64 KiB, so a larger frame is refused before it is buffered), and an event-loop error handler that logs each
kind of error at most once every `LOG_INTERVAL_S` seconds (a full descriptor table made Python 3.11's accept loop log
one traceback per queued connection: 258 MB in 40 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
import time
from typing import Any

from ..errors import ConfigError
from ..model import AST
from .app import Service, create_app
from .limits import ServeSettings

WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # --host values that listen on every interface
# File descriptors kept beside the connections: the listening socket, the log, the model's files, thread pipes.
RESERVED_DESCRIPTORS = 64
# Connections the event loop accepts in one go (uvicorn's `backlog`, which asyncio also uses as the listen queue):
# they are accepted before the connection cap can close any, so two batches' worth of descriptors are kept free.
ACCEPT_BATCH = 64
LOG_INTERVAL_S = 10.0
WS_FRAME_SLACK = 64 * 1024  # a frame this much over the app's limits still reaches the app (which answers why)
WS_QUEUED_FRAMES = 8  # frames the protocol buffers for a session before it stops reading the socket


class LoopErrorLimiter:
    """An asyncio exception handler that logs each kind of error (its message) at most once every `interval_s`
    seconds, then says how many of that kind it left out."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        kind, now = str(context.get("message", "")), time.monotonic()
        if kind in self.last and now - self.last[kind] < self.interval_s:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        if len(self.last) > 256:  # kinds are few; never let the table itself grow without bound
            self.last.clear()
        self.last[kind] = now
        left_out = self.suppressed.pop(kind, 0)
        if left_out:
            context = {**context, "message": f"{kind} ({left_out} more like it in the last {self.interval_s:g} s "
                                             "were not logged)"}
        loop.default_exception_handler(context)


def reserve_descriptors(max_connections: int) -> None:
    """Raise the soft file-descriptor limit to fit `max_connections` plus RESERVED_DESCRIPTORS (up to the hard
    limit); ConfigError when even the hard limit is too low."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to check
        return
    need = max_connections + 2 * ACCEPT_BATCH + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        fits = max(1, hard - 2 * ACCEPT_BATCH - RESERVED_DESCRIPTORS)
        raise ConfigError(f"--max-connections {max_connections} needs {need} file descriptors, but this process may "
                          f"open at most {hard} (ulimit -Hn); use --max-connections {fits} or less, or raise the limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


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
        sock.listen(ACCEPT_BATCH)
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

    class Server(uvicorn.Server):
        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            asyncio.get_running_loop().set_exception_handler(LoopErrorLimiter())
            await super().serve(sockets=sockets)

    reserve_descriptors(settings.max_connections)
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
        protocol = HeaderTimeoutProtocol.with_header_timeout(settings.header_timeout_s, settings.max_connections)
        config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"),
                                lifespan="off", timeout_graceful_shutdown=5, http=protocol,
                                ws_max_size=max(settings.stream_max_message_bytes, settings.stream_max_text_bytes)
                                + WS_FRAME_SLACK, ws_max_queue=WS_QUEUED_FRAMES, backlog=ACCEPT_BATCH)
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _precision_line(model: Any) -> str:
    """"precision X" or, when it was chosen, "precision auto -> X: why"."""
    choice = model.precision_choice
    return choice.describe() if choice is not None else f"precision {model.precision}"
