"""WebSocket /v1/stream against the real `ast-audio serve` process on 127.0.0.1: a good stream equals the Python API,
a bad first message, an oversized chunk, a client that disconnects mid-stream, two sessions at once, the session
limit, a foreign Origin."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from ast_audio.infer.events import EventConfig
from ast_audio.infer.live import StreamingTagger
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model
from helpers import START, pcm, refused, stream
from serve_helpers import run_server, save_tiny_checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("ws") / "ckpt")
    with run_server(ckpt, "--stream-max-sessions", "2", "--stream-max-message-kb", "64") as srv:
        srv.ckpt = ckpt  # type: ignore[attr-defined]
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/stream"  # type: ignore[attr-defined]
        yield srv


def library(ckpt: Path, data: np.ndarray) -> list:
    tagger = Tagger(load_model(ckpt))
    config = EventConfig(threshold=0.5, median_windows=3)
    streamer = StreamingTagger(tagger, 22050, 2, window_s=1.0, hop_s=0.5, events=config)
    return [h.to_dict(3) for h in streamer.run([data.astype(np.float32) / 32768])]


def check_equal(got: list[dict], expected: list[dict]) -> None:
    """Every window the server scored equals the library's window of that index (a server falling behind may
    skip windows, and counts them); events equal when nothing was skipped."""
    assert got[0]["ready"] is True and got[0]["hop_s"] == 0.5 and got[0]["window_s"] == 1.0
    done = got[-1]
    assert done["done"] is True and done["windows"] == len([e for e in expected if e["top"]])
    hops = got[1:-1]
    by_index = {e["index"]: e for e in expected if e["top"]}
    scored = [h for h in hops if h["top"]]
    assert len(scored) + done["skipped"] == done["windows"]
    for h in scored:
        e = by_index[h["index"]]
        assert (h["start_s"], h["end_s"]) == (e["start_s"], e["end_s"])
        assert [t["label"] for t in h["top"]] == [t["label"] for t in e["top"]]
        np.testing.assert_allclose([t["score"] for t in h["top"]], [t["score"] for t in e["top"]], atol=2e-6)
    if done["skipped"] == 0:
        assert [(h["opened"], h["closed"]) for h in hops] == [(e["opened"], e["closed"]) for e in expected]


def test_good_stream_equals_library(server):
    """22.05 kHz stereo s16le in 0.1 s chunks: the server's hops are the Python API's on the same samples."""
    data = pcm(4.0, seed=0)
    got = stream(server.ws, data)
    expected = library(server.ckpt, data)
    check_equal(got, expected)
    assert any(h.get("closed") for h in got[1:-1])  # the stream does produce events
    assert all("error" not in m for m in got)
    import matplotlib
    from matplotlib.colors import to_hex

    labels = load_model(server.ckpt).labels  # the page colours live classes as the PNG does: tab10 by label index
    assert got[0]["colours"] == {label: to_hex(matplotlib.colormaps["tab10"](i % 10)) for i, label in enumerate(labels)}


def test_bad_first_messages_and_oversized_chunk(server):
    """Binary or non-JSON first messages, a bad rate or format, an unknown class, a hop below the server's limit:
    one-line errors, close 1008. A PCM chunk over stream_max_message_kb: error, close 1009."""
    cases = [(b"\x00\x01", "first message is binary"),
             ("hello", "not JSON"),
             (json.dumps({"format": "s16le"}), "has no rate"),
             (json.dumps({"rate": 0}), "rate must be an integer in [8000, 192000]"),
             (json.dumps({"rate": 16000, "format": "mp3"}), "format must be one of s16le, f32le"),
             (json.dumps({"rate": 16000, "only": ["Nope"]}), "unknown class name"),
             (json.dumps({"rate": 16000, "window_s": 1.0, "hop_s": 0.01}), "min_hop_fraction"),
             (json.dumps({"rate": 16000, "bogus": 1}), "unknown field(s) bogus")]
    for first, expected in cases:
        message, code = refused(server.ws, first)
        assert expected in message["error"] and "\n" not in message["error"], (first, message)
        assert code == 1008
    message, code = refused(server.ws, json.dumps({"rate": 16000}), then=b"\x00" * (64 * 1024 + 2))
    assert code == 1009 and "larger than the 65536 allowed (stream_max_message_kb)" in message["error"]


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 5.2); the zero mask keeps the payload as is."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536
                                                else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    return bytes([0x80 | opcode]) + length + b"\x00\x00\x00\x00" + payload


def vanish_mid_stream(url: str, audio: bytes) -> None:
    """Open a stream by hand, declare it, wait for "ready", send audio, then drop the TCP connection without a close
    frame (a crashed client, a lost network)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        answer = b""
        while b"ready" not in answer:
            if b"\r\n\r\n" in answer and not answer.startswith(b"HTTP/1.1 101"):
                raise AssertionError(answer[:200])
            if answer.endswith(b"\r\n\r\n"):
                sock.sendall(frame(0x1, json.dumps(START).encode()))
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.sendall(frame(0x2, audio))
        sock.shutdown(socket.SHUT_RDWR)


def test_disconnect_mid_stream_then_two_sessions_at_once(server):
    """Clients that vanish mid-stream (TCP closed without a close frame) free their session; then two sessions
    streaming at once each get their own audio's hops; a third while two are open is refused with 1013."""
    for _ in range(3):  # more than stream_max_sessions (2): a leaked session would block the streams below
        vanish_mid_stream(server.url, pcm(1.5, seed=9)[:22050].tobytes())
    time.sleep(0.5)
    data = [pcm(3.0, seed=1), pcm(3.0, seed=2)]
    results: list[list[dict] | None] = [None, None]

    ready = [threading.Event(), threading.Event()]

    def run(i: int) -> None:
        results[i] = stream(server.ws, data[i], ready=ready[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert all(r.wait(timeout=60) for r in ready)  # both are streaming now
    with connect(server.ws, open_timeout=30) as third:
        message = json.loads(third.recv(timeout=30))  # refused as soon as it is accepted, before it declares
        with pytest.raises(ConnectionClosed):
            third.recv(timeout=30)
        assert third.close_code == 1013 and "stream_max_sessions" in message["error"]
    for t in threads:
        t.join(timeout=120)
    for i in range(2):
        check_equal(results[i], library(server.ckpt, data[i]))
    assert results[0][1]["start_s"] == 0.0 and results[0] != results[1]
    assert "Traceback" not in server.output()


def test_foreign_origin_refused(server):
    """A page on another origin may not open the stream (browsers send Origin with WebSockets, and no CORS applies):
    the handshake is refused with 403, as cross-origin HTTP requests are."""
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws, open_timeout=30, origin="http://evil.example")
    assert info.value.response.status_code == 403
    with connect(server.ws, open_timeout=30, origin=server.url) as ws:  # the page's own origin is served
        ws.send(json.dumps({"rate": 16000}))
        assert json.loads(ws.recv(timeout=30))["ready"] is True


def test_message_rate_and_session_length_limits(tmp_path):
    """A stream sending more messages per second than stream_max_messages_per_s, or staying open past
    stream_max_session_s, gets a one-line error naming the limit and close 1008; the server goes on serving."""
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    with run_server(ckpt, "--stream-max-messages-per-s", "5", "--stream-max-session-s", "1.5") as srv:
        url = srv.url.replace("http://", "ws://") + "/v1/stream"
        with connect(url, open_timeout=30) as ws:
            ws.send(json.dumps({"rate": 16000}))
            assert json.loads(ws.recv(timeout=30))["ready"] is True
            for _ in range(8):  # 8 chunks within well under a second
                ws.send(b"\x00\x00" * 160)
            message = json.loads(ws.recv(timeout=30))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
            assert ws.close_code == 1008 and "more than 5 messages per second" in message["error"]
        with connect(url, open_timeout=30) as ws:
            ws.send(json.dumps({"rate": 16000}))
            assert json.loads(ws.recv(timeout=30))["ready"] is True
            message = json.loads(ws.recv(timeout=30))  # nothing sent: the session limit ends it
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
            assert ws.close_code == 1008 and "1.5 s session limit (stream_max_session_s)" in message["error"]
        assert "Traceback" not in srv.output()


# ----------------------------------------------------------------------------------------------------------------------
# The rate limits are about audio (issue 19, item 8): docs/serve.md's example runs as written against the defaults


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """`ast-audio serve` with every stream limit at its default."""
    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("ws_defaults") / "ckpt")
    with run_server(ckpt) as srv:
        srv.ckpt = ckpt  # type: ignore[attr-defined]
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/stream"  # type: ignore[attr-defined]
        yield srv


def docs_example() -> str:
    """The Python WebSocket client of docs/serve.md, as printed there."""
    text = (ROOT / "docs" / "serve.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "websockets.sync.client" in b]
    return example


def test_docs_example_runs_as_written_against_the_defaults(default_server, tmp_path):
    """The example (its file and address substituted) streams a 6 s 22.05 kHz stereo file in 0.1 s messages, paced
    at twice real time: it gets every hop and {"done": true}, where main's unpaced example was cut off by the
    50-messages-a-second limit after two hops. Its hops are the library's on the same samples."""
    data = pcm(6.0, seed=3)  # (N, 2) int16 at 22.05 kHz
    path = tmp_path / "street.wav"
    import soundfile as sf

    sf.write(str(path), data, 22050, subtype="PCM_16")
    code = docs_example()
    assert '"street.wav"' in code and "ws://127.0.0.1:8000/v1/stream" in code
    code = code.replace('"street.wav"', repr(str(path))).replace("ws://127.0.0.1:8000/v1/stream", default_server.ws)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    assert got[0]["ready"] is True and all("error" not in m for m in got), got[-1]
    done = got[-1]
    tagger = Tagger(load_model(default_server.ckpt))
    expected = [h.to_dict(10) for h in StreamingTagger(tagger, 22050, 2).run([data.astype(np.float32) / 32768])]
    scored = {e["index"]: e for e in expected if e["top"]}
    assert done["done"] is True and done["windows"] == len(scored) >= 8
    hops = [h for h in got[1:-1] if h["top"]]
    assert len(hops) + done["skipped"] == done["windows"]
    for h in hops:
        assert [t["label"] for t in h["top"]] == [t["label"] for t in scored[h["index"]]["top"]]


def send_unpaced(url: str, seconds: float, chunk_s: float) -> tuple[list[dict], int | None]:
    """Send `seconds` of 16 kHz mono s16le at once in `chunk_s` messages, then {"end": true}; every message the
    server sent and its close code."""
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"rate": 16000}))
        messages = [json.loads(ws.recv(timeout=30))]
        chunk = np.zeros(int(16000 * chunk_s), dtype="<i2").tobytes()
        try:
            for _ in range(round(seconds / chunk_s)):
                ws.send(chunk)
            ws.send(json.dumps({"end": True}))
        except ConnectionClosed:
            pass
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def test_audio_faster_than_real_time_within_the_burst_then_refused(default_server):
    """Unpaced messages: 20 s of audio in 1 s messages (within the 30 s burst) are all scored; 200 s in 50 messages
    of 4 s (within the message limit's burst) exceed the burst unless reading them took 42 s, so the stream is
    refused in one line naming the limit (main took all 200 s: it counted messages only)."""
    messages, code = send_unpaced(default_server.ws, 20.0, 1.0)
    assert code == 1000 and messages[-1]["done"] is True and all("error" not in m for m in messages)
    messages, code = send_unpaced(default_server.ws, 200.0, 4.0)
    error = messages[-1]["error"]
    assert code == 1008 and "\n" not in error
    assert "faster than 4 x real time after a burst of 30 s (stream_max_speed, stream_burst_s)" in error
    assert "Traceback" not in default_server.output()


def test_token_bucket_burst_then_rate():
    from ast_audio.serve.limits import TokenBucket

    bucket = TokenBucket(rate=4.0, burst=30.0, now=100.0)
    assert bucket.take(30.0, 100.0) and not bucket.take(0.5, 100.0)  # the burst at once, then nothing left
    assert bucket.take(4.0, 101.0) and not bucket.take(0.1, 101.0)  # 4 s of audio a second
    assert bucket.take(30.0, 200.0) and not bucket.take(1.0, 200.0)  # a long pause refills up to the burst only
    assert not bucket.take(31.0, 1e6)  # more than the burst never passes at once
