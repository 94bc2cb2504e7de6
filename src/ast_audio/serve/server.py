"""Start-up of the service: bind the port first (a taken port fails fast), load the model once, print one line
with the URL, and run the app on uvicorn with the header timeout (`protocol.HeaderTimeoutProtocol`) until
interrupted. `ast-audio serve` calls `run_server`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import Any

from ..errors import ConfigError
from ..model import AST
from .app import Service, create_app
from .limits import ServeSettings

WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # --host values that listen on every interface


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
    choice = model.precision_choice
    return choice.describe() if choice is not None else f"precision {model.precision}"
