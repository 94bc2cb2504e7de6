"""The service's default limits (no fastapi, torch or numpy): `ServeSettings` (limits.py) takes its defaults from
here and `ast-audio serve` shows and applies the same objects, so the two cannot drift apart. The meaning of each
number is in `ServeSettings`' docstring."""

from __future__ import annotations

from typing import Final

MAX_UPLOAD_MB: Final = 20.0
MAX_DURATION_S: Final = 600.0
UPLOAD_TIMEOUT_S: Final = 60.0
THREADS: Final = 2
BATCH_SIZE: Final = 8
TOP_K: Final = 10
MIN_HOP_FRACTION: Final = 0.1
MAX_WINDOWS: Final = 600
MAX_ACTIVE_REQUESTS: Final = 16
HEADER_TIMEOUT_S: Final = 10.0
STREAM_MAX_SESSIONS: Final = 4
STREAM_MAX_MESSAGE_KB: Final = 256.0
STREAM_MAX_MESSAGES_PER_S: Final = 50
STREAM_MAX_SPEED: Final = 4.0
STREAM_BURST_S: Final = 30.0
STREAM_MAX_SESSION_S: Final = 3600.0
STREAM_IDLE_TIMEOUT_S: Final = 30.0
STREAM_MAX_SESSIONS_PER_CLIENT: Final = 2
STREAM_MAX_TEXT_KB: Final = 64.0
MAX_CONNECTIONS: Final = 512
# min_hop_fraction's upper bound: 0.5 still accepts the default half-window hop of /v1/tag and live streams.
MAX_MIN_HOP_FRACTION: Final = 0.5
