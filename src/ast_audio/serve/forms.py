"""Reading a request's multipart form: one audio `file` part (content type checked, the client's file name kept
only as a display name) plus text fields, and number fields parsed within bounds. Every failure is an `ApiError`
(415 for what is not audio or not a form, 422 for a missing, empty or malformed part or field).

Uploads are decoded from memory by the service: no endpoint ever opens a path that a client names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..config import parse_option
from ..errors import ConfigError
from .fair import RequestAbandoned
from .limits import ApiError

# Content types accepted for the `file` part. Browsers and curl label unknown files application/octet-stream,
# and a part without a type is left to the decoder; anything else that is not audio/* is refused with 415.
GENERIC_TYPES = ("application/octet-stream", "application/ogg", "")
MAX_NAME_CHARS = 200


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


def form_number(fields: Mapping[str, str], name: str, default: Any = None, deprecated: Sequence[str] = ()) -> Any:
    """The optional numeric form field `name`, checked against its range in `ast_audio.config.OPTION_RANGES` (the
    same as the CLI option's and the WebSocket field's); `default` when absent or empty; a bad value is a 422.
    `deprecated`: older names of the field, still read (`form_field`)."""
    text = fields.get(form_field(fields, name, deprecated))
    if text is None or text.strip() == "":
        return default
    try:
        return parse_option(name, text)
    except ConfigError as exc:
        raise ApiError(422, f"form field {exc}") from None


def form_field(fields: Mapping[str, str], name: str, deprecated: Sequence[str] = ()) -> str:
    """The name under which the request sent a field: `name`, else one of its `deprecated` spellings (the API keeps
    them, as the CLI keeps its old option spellings, docs/cli.md); both at once is a 422."""
    sent = [old for old in deprecated if old in fields]
    if sent and name in fields:
        raise ApiError(422, f"form fields {name} and {sent[0]} are the same setting ({sent[0]} is its old name); "
                            f"send only {name}")
    return sent[0] if sent else name


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
    except ClientDisconnect:  # the client left during its upload: nothing to answer, nothing to log
        raise RequestAbandoned from None
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
