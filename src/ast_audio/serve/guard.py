"""Who may talk to the service: the `Host` header (DNS rebinding) and the `Origin` header (cross-site requests).

DNS rebinding: a page on evil.example makes its name resolve to 127.0.0.1, and the browser then treats this
server as evil.example itself (same origin), so the page could upload audio and read the answers. The browser
still sends `Host: evil.example`, so requests are only served when the Host names this server: an IP literal (a
rebinding attack needs a DNS name, so an address cannot be one), `localhost`, the name the server was bound to, or a
name listed with `--allowed-hosts` (`*` accepts any).

Cross-origin requests: any web page can make a visitor's browser POST a form (a multipart upload) to this
server without a preflight; the answer is unreadable to that page, but the work is done. Browsers send an
`Origin` header with such requests, so one whose origin is not this server's own (scheme://Host) is refused
with 403 unless `--allow-origin` names it. Requests without `Origin` (curl, scripts, same-origin navigations)
are served.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..utils import one_line

LOCAL_HOSTS = ("localhost",)
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(value: str) -> str:
    """A Host header (or host name) -> the bare lower-case name: 'Example.COM:8000' -> 'example.com',
    '[::1]:8000' -> '::1', 'localhost.' -> 'localhost'."""
    value = value.strip().lower()
    if value.startswith("["):  # [IPv6]:port
        end = value.find("]")
        name = value[1:end] if end > 0 else value
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        name = value.rsplit(":", 1)[0]
    else:
        name = value
    return name.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_host_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate `--allowed-hosts` entries (host names, '*' for any) and return them normalised."""
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or "/" in name or any(ch.isspace() for ch in name.strip()):
            raise ConfigError(f"allowed host {name!r} is not a host name; expected a name such as audio.example.org "
                              "(no scheme, path or spaces), or * for any")
        out.append(name.strip() if name.strip() == "*" else host_name(name))
    return tuple(out)


def normalise_origin(origin: str) -> str:
    """'HTTP://Example.org:80/' -> 'http://example.org' (scheme and host lower case, default port dropped)."""
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # an unparsable port: keep the origin unnormalised; it will match nothing
    netloc = (parts.hostname or "") if port in (None, DEFAULT_PORTS.get(scheme)) else parts.netloc.lower()
    if ":" in netloc and port in (None, DEFAULT_PORTS.get(scheme)):  # an IPv6 host needs its brackets back
        netloc = f"[{netloc}]"
    return f"{scheme}://{netloc}"


def check_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Validate `--allow-origin` entries (scheme://host[:port], '*' for any) and return them normalised."""
    out = []
    for origin in origins:
        text = origin.strip() if isinstance(origin, str) else ""
        if text == "*":
            out.append(text)
            continue
        parts = urlsplit(text)
        if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            raise ConfigError(f"allowed origin {origin!r} is not an origin; expected scheme://host[:port] such as "
                              "https://app.example.org (no path), or * for any")
        out.append(normalise_origin(text))
    return tuple(out)


async def send_json_error(send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    """Answer an ASGI request with `status` and {"error": message} from a middleware, before the app read the body;
    `Connection: close`, since the unread body (if any) is abandoned."""
    body = json.dumps({"error": one_line(message)}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    """Pure ASGI middleware: 400 for a Host this server does not answer to, 403 for a foreign Origin.

    Runs before anything reads the body, and a refused request is answered with `Connection: close`, so a refused
    upload is never read or processed. Errors are JSON {"error": ...}.

    Args:
        app: the ASGI app to guard.
        allowed_hosts: host names accepted besides IP literals and localhost ('*' = any).
        allow_origins: origins accepted besides the server's own ('*' = any).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], allowed_hosts: Iterable[str] = (),
                 allow_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = frozenset((*LOCAL_HOSTS, *check_host_names(allowed_hosts)))
        self.allow_origins = frozenset(check_origins(allow_origins))

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return "*" in self.allowed_hosts or name in self.allowed_hosts or is_ip_literal(name)

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Same origin as the request's Host (any scheme: a TLS proxy in front may keep the Host), or listed."""
        if "*" in self.allow_origins:
            return True
        normal = normalise_origin(origin)
        if normal in self.allow_origins:
            return True
        if host is None or origin.strip().lower() == "null":
            return False
        scheme = urlsplit(normal).scheme
        return normal == normalise_origin(f"{scheme}://{host.strip()}")

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and not self.host_allowed(host):
            message = (f"this server does not answer to Host {host[:100]!r}; expected its address or localhost; "
                       "start the server with --allowed-hosts NAME to serve it under that name")
            await self._refuse(scope, send, 400, message)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self.origin_allowed(origin, host):
            message = (f"cross-origin request from {origin[:100]!r} refused; only pages served by this server may "
                       "call it; start the server with --allow-origin ORIGIN to accept that origin")
            await self._refuse(scope, send, 403, message)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: dict, send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
        """HTTP: the JSON error. WebSocket (a browser's page opens one to any host without CORS): the handshake is
        refused before it is accepted, which the server answers with HTTP 403."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": one_line(message)[:120]})
        else:
            await send_json_error(send, status, message)


__all__ = ["RequestGuard", "send_json_error", "host_name", "is_ip_literal", "check_host_names", "check_origins",
           "normalise_origin"]
