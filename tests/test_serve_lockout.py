"""Amplification and lock-out (issue 21): the server must stay up for everyone.

Against the real `ast-audio serve` (tiny model, 127.0.0.1 only): WebSocket first messages that amplified memory
(a 1 Hz rate, a median of 2e9 windows) or crashed the session (`"format": ["s16le"]`) get one line and 1008; text
frames and name lists are bounded; silent streams are closed after the idle timeout and one address holds at most
its share; requests whose client disconnected stop; idle connections beyond the cap cannot stall /healthz or flood
the log; the app under plain uvicorn enforces what docs/serve.md says it does. Also `listen --input -` reading a
fast pipe keeps its memory bounded (back-pressure). Memory is the server's (or listen's) RSS read with psutil.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import run_main
from serve_helpers import ROOT, run_server, save_tiny_checkpoint, write_pattern

MiB = 1 << 20
IDLE_S = 1.5  # the server's --stream-idle-timeout-s
MEDIAN_RANGE = "an odd number of windows from 1 to 99"  # the one wording of the median's range, CLI, form and stream


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("lockout") / "ckpt")


@pytest.fixture(scope="module")
def server(ckpt):
    with run_server(ckpt, "--stream-idle-timeout-s", str(IDLE_S), "--stream-max-sessions", "4",
                    "--workers-threads", "1", "--batch-size", "1") as srv:
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/stream"  # type: ignore[attr-defined]
        yield srv


def rss(server) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def ws_from(url: str, source: str = "127.0.0.1"):
    """A WebSocket client connecting from `source` (any 127.x.y.z is this machine: distinct client addresses)."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0))
    return connect(url, sock=sock, open_timeout=30)


def refused(url: str, first: str) -> tuple[dict, int]:
    """Send `first`; return the server's one message (which must be an error) and its close code."""
    with ws_from(url) as ws:
        ws.send(first)
        message = json.loads(ws.recv(timeout=60))
        assert "error" in message, (first[:80], message)  # "ready" here: the field was accepted
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
        return message, ws.close_code


def test_every_bad_first_field_is_one_line_and_1008(server):
    """Hostile values of every kind, each refused with {"error": one line} and close 1008 (none accepted, none a
    traceback or an abnormal close); the server's memory does not grow."""
    before = rss(server)
    cases = [({"rate": 1}, "rate must be an integer in [8000, 192000]"),
             ({"rate": 7999}, "rate must be"), ({"rate": 192001}, "rate must be"),
             ({"rate": 16000, "median": 20000001}, MEDIAN_RANGE),
             ({"rate": 16000, "median": 2000000001}, MEDIAN_RANGE),
             ({"rate": 16000, "median": 4}, MEDIAN_RANGE),
             ({"rate": 16000, "format": ["s16le"]}, "format must be one of s16le, f32le"),
             ({"rate": 16000, "format": {}}, "format must be one of"),
             ({"rate": "16000"}, "rate must be"), ({"rate": True}, "rate must be"), ({"rate": 16000.5}, "rate must be"),
             ({"rate": 10**400}, "rate must be"), ({"rate": 16000, "channels": 33}, "channels must be"),
             ({"rate": 16000, "top_k": [1]}, "top_k must be"), ({"rate": 16000, "top_k": 0}, "top_k must be"),
             ({"rate": 16000, "threshold": {}}, "threshold must be"),
             ({"rate": 16000, "hysteresis": 0}, "hysteresis must be"),
             ({"rate": 16000, "min_duration": 1e300}, "min_duration must be"),
             ({"rate": 16000, "merge_gap": -1}, "merge_gap must be"),
             ({"rate": 16000, "window_s": [1.0]}, "window_s must be"),
             ({"rate": 16000, "hop_s": "0.5"}, "hop_s must be"),
             ({"rate": 16000, "only": [1, 2]}, "only must be a list of class names"),
             ({"rate": 16000, "exclude": {"a": 1}}, "exclude must be a list of class names")]
    for first, expected in cases:
        message, code = refused(server.ws, json.dumps(first))
        assert expected in message["error"] and "\n" not in message["error"], (first, message)
        assert code == 1008, first
    for text in ["[" * 30000, '{"rate": 1e400}', '{"rate": NaN}', '{"rate": 16000, "threshold": Infinity}']:
        message, code = refused(server.ws, text)
        assert code == 1008 and "\n" not in message["error"], (text[:40], message)
    # An allowed rate resamples at most model_rate / 8000 = 2 x: 2 s of 8 kHz audio, accepted, costs little.
    with ws_from(server.ws) as ws:
        ws.send(json.dumps({"rate": 8000}))
        assert json.loads(ws.recv(timeout=30))["ready"] is True
        ws.send(b"\x01\x00" * 16000)
        ws.send(json.dumps({"end": True}))
        while "done" not in (message := json.loads(ws.recv(timeout=60))):
            assert "error" not in message
    assert rss(server) - before < 200 * MiB
    assert "Traceback" not in server.output()


def test_median_range_is_the_same_for_cli_form_and_stream(server, ckpt, tmp_path, capsys):
    """One table: `events --median 101`, the form field and the WebSocket field are refused with the same range."""
    clip = write_pattern(tmp_path / "clip.wav", 2.0)
    rc, _, err = run_main(capsys, "events", str(clip), "--checkpoint", str(ckpt), "--median", "101")
    assert rc == 2 and MEDIAN_RANGE in err
    with open(clip, "rb") as f:
        response = httpx.post(server.url + "/v1/events", files={"file": ("clip.wav", f, "audio/wav")},
                              data={"median": "101"}, timeout=60)
    assert response.status_code == 422 and MEDIAN_RANGE in response.json()["error"]
    message, code = refused(server.ws, json.dumps({"rate": 16000, "median": 101}))
    assert code == 1008 and MEDIAN_RANGE in message["error"]


def test_text_frames_and_name_lists_are_bounded(server):
    """A first message over stream_max_text_kb (64 KiB) is refused before it is parsed (1009 with the limit's name);
    one far over the WebSocket frame limit is closed by the protocol (1009); a list of more names than the model
    could mean, and one string of 5,000 comma-separated names (cubic to parse before), are one line and 1008."""
    message, code = refused(server.ws, json.dumps({"rate": 16000, "only": ["Speech"] * 12000}))  # 120 KB
    assert code == 1009 and "stream_max_text_kb" in message["error"]
    with ws_from(server.ws) as ws:
        ws.send(json.dumps({"rate": 16000, "only": ["Speech"] * 1_900_000}))  # 19 MB
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=60)
        assert ws.close_code == 1009
    message, code = refused(server.ws, json.dumps({"rate": 16000, "only": ["Speech"] * 1001}))
    assert code == 1008 and "more than the 1000 accepted" in message["error"]
    message, code = refused(server.ws, json.dumps({"rate": 16000, "exclude": ",".join(["Speech"] * 5000)}))
    assert code == 1008 and "more than the" in message["error"]
    assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200


def test_silent_streams_are_closed_and_one_address_holds_its_share(server):
    """Four clients (four addresses) that declare a stream and send nothing held every place for an hour; now each
    is closed after the idle timeout with a line naming it, and a fifth client is served. One address may hold at
    most stream_max_sessions_per_client (2) streams: its third is refused with 1013 naming that limit."""
    clients = [ws_from(server.ws, f"127.0.0.{i}") for i in range(2, 6)]
    try:
        for ws in clients:
            ws.send(json.dumps({"rate": 16000}))
            assert json.loads(ws.recv(timeout=30))["ready"] is True
        for ws in clients:
            message = json.loads(ws.recv(timeout=30))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
            assert ws.close_code == 1008 and f"no audio for {IDLE_S:g} s (stream_idle_timeout_s)" in message["error"]
    finally:
        for ws in clients:
            ws.close()
    time.sleep(0.5)  # the server's side of the closes
    with ws_from(server.ws, "127.0.0.6") as a, ws_from(server.ws, "127.0.0.6") as b:
        for ws in (a, b):
            ws.send(json.dumps({"rate": 16000}))
            assert json.loads(ws.recv(timeout=30))["ready"] is True
        with ws_from(server.ws, "127.0.0.6") as third:
            message = json.loads(third.recv(timeout=30))
            with pytest.raises(ConnectionClosed):
                third.recv(timeout=30)
            assert third.close_code == 1013 and "stream_max_sessions_per_client" in message["error"]
        with ws_from(server.ws, "127.0.0.7") as other:  # another address is still served
            other.send(json.dumps({"rate": 16000}))
            assert json.loads(other.recv(timeout=30))["ready"] is True


def multipart(fields: dict[str, str], name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "lockout-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                 "Content-Type: audio/wav\r\n\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), boundary


def load_of(server) -> dict:
    return httpx.get(server.url + "/healthz", timeout=30).json()["load"]


def wait_for(predicate, what: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        load = predicate()
        if load:
            return load
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_abandoned_requests_stop_at_their_next_batch(server, tmp_path):
    """Four 491-window requests (one window per batch) whose clients disconnect once their work has started:
    each stops at its next batch and is counted as abandoned, so far fewer than the 4 x 491 batches are computed.
    A request whose client stays is computed in full (491 batches: the counter counts batches)."""
    clip = write_pattern(tmp_path / "long.wav", 50.0)
    body, boundary = multipart({"window_s": "1.0", "hop_s": "0.1"}, "long.wav", clip.read_bytes())
    head = (f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    host, port = server.url.removeprefix("http://").split(":")
    start = load_of(server)
    socks = []
    try:
        for _ in range(4):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(head + body)
            socks.append(sock)
        wait_for(lambda: (load := load_of(server))["active_requests"] == 4 and load, "4 requests computing")
    finally:
        for sock in socks:
            sock.close()
    end = wait_for(lambda: (load := load_of(server))["active_requests"] == 0 and load, "the requests to stop")
    assert end["abandoned_requests"] - start["abandoned_requests"] == 4, (start, end, server.output()[-3000:])
    assert end["batches_done"] - start["batches_done"] < 4 * 491 // 4
    with open(clip, "rb") as f:
        response = httpx.post(server.url + "/v1/tag", files={"file": ("long.wav", f, "audio/wav")},
                              data={"window_s": "1.0", "hop_s": "0.1"}, timeout=300)
    assert response.status_code == 200 and len(response.json()["windows"]) == 491
    assert load_of(server)["batches_done"] - end["batches_done"] == 491
    assert "Traceback" not in server.output()


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_idle_connections_cannot_stall_healthz_or_flood_the_log(ckpt):
    """At `ulimit -n 256`, 300 idle TCP connections: the server keeps at most --max-connections (50) open by closing
    the longest-idle ones, so it never runs out of descriptors (which made every accept() log a traceback, 258 MB in
    40 s), /healthz is answered, and the log stays a few lines."""
    with run_server(ckpt, "--max-connections", "50", preexec_fn=_few_descriptors) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        idle = []
        try:
            for _ in range(300):
                idle.append(socket.create_connection((host, int(port)), timeout=30))
            time.sleep(1.0)
            response = httpx.get(srv.url + "/healthz", timeout=60)
            assert response.status_code == 200 and response.json()["limits"]["max_connections"] == 50
            held = [c for c in psutil.Process(srv.process.pid).net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED]
            assert len(held) <= 50 + 1
        finally:
            for sock in idle:
                sock.close()
        assert "Traceback" not in srv.output() and len(srv.lines) < 10, srv.output()[-2000:]


def test_loop_errors_are_rate_limited():
    """The event loop's error handler of `ast-audio serve` logs a burst of one error once, then how many it left
    out; another kind of error is still logged."""
    from ast_audio.serve.server import LoopErrorLimiter

    class Loop:
        def __init__(self) -> None:
            self.logged: list[str] = []

        def default_exception_handler(self, context: dict) -> None:
            self.logged.append(context["message"])

    loop, limiter = Loop(), LoopErrorLimiter(interval_s=0.2)
    for _ in range(10_000):
        limiter(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "EMFILE")})
    limiter(loop, {"message": "something else"})
    time.sleep(0.25)
    limiter(loop, {"message": "socket.accept() out of system resource"})
    assert loop.logged[:2] == ["socket.accept() out of system resource", "something else"]
    assert len(loop.logged) == 3 and "9999 more like it" in loop.logged[2]


PLAIN_UVICORN = """
import socket, sys
import uvicorn
from ast_audio.serve.app import create_app
from ast_audio.serve.limits import ServeSettings

app = create_app(sys.argv[1], ServeSettings(stream_max_text_kb=1, stream_idle_timeout_s=1.0))
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
"""


def test_create_app_under_plain_uvicorn_enforces_the_app_limits(ckpt, tmp_path):
    """`create_app` mounted in plain uvicorn (not `ast-audio serve`) enforces the stream limits docs/serve.md says
    the app enforces itself: the text-message size and the idle timeout."""
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_UVICORN)
    with run_server(ckpt, command=[sys.executable, str(script), str(ckpt)]) as srv:
        url = srv.url.replace("http://", "ws://") + "/v1/stream"
        message, code = refused(url, json.dumps({"rate": 16000, "only": ["Speech"] * 300}))  # 3 KB > 1 KiB
        assert code == 1009 and "stream_max_text_kb" in message["error"]
        with ws_from(url) as ws:
            ws.send(json.dumps({"rate": 16000}))
            assert json.loads(ws.recv(timeout=30))["ready"] is True
            message = json.loads(ws.recv(timeout=30))
            assert "stream_idle_timeout_s" in message["error"]
        assert "Traceback" not in srv.output()


NEW_LIMITS = {"stream_idle_timeout_s": ("--stream-idle-timeout-s", "30"),
              "stream_max_sessions_per_client": ("--stream-max-sessions-per-client", "2"),
              "stream_max_text_kb": ("--stream-max-text-kb", "64"), "max_connections": ("--max-connections", "512")}


def test_new_limits_are_documented_with_their_defaults():
    """docs/security.md and docs/serve.md name every new limit with its default, which is ServeSettings' and the
    CLI's; serve.md says which limits the app enforces itself and which only `ast-audio serve` adds."""
    from ast_audio.cli.main import build_parser
    from ast_audio.serve.limits import ServeSettings

    args, defaults = build_parser().parse_args(["serve"]), ServeSettings()
    serve_md, security_md = (ROOT / "docs" / "serve.md").read_text(), (ROOT / "docs" / "security.md").read_text()
    for name, (option, default) in NEW_LIMITS.items():
        assert float(getattr(args, name)) == float(getattr(defaults, name)) == float(default)
        assert f"`{option}` [{default}" in security_md, option
        assert f"`{option}` (default {default}" in serve_md, option
    assert "only `ast-audio serve` adds" in serve_md and "header timeout" in serve_md


def test_listen_stdin_without_realtime_is_back_pressured(ckpt):
    """`listen --input -` fed a fast pipe (up to 300 MB of PCM, more than it can score) no longer queues all of
    it: its RSS grows by far less than the audio written (before: 400 MB in, 2.8 GB RSS)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ast_audio", "listen", "--checkpoint", str(ckpt), "--precision",
                                "fp32", "--input", "-", "--format", "jsonl", "--block", "1.0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    written, stop = [0], threading.Event()
    first_line = threading.Event()

    def write() -> None:
        chunk = (np.random.default_rng(0).standard_normal(MiB // 2) * 3000).astype("<i2").tobytes()  # 1 MiB
        try:
            while written[0] < 300 * MiB and not stop.is_set():
                process.stdin.write(chunk)
                written[0] += len(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass

    def read() -> None:
        for _ in process.stdout:
            first_line.set()

    threading.Thread(target=write, daemon=True).start()
    threading.Thread(target=read, daemon=True).start()
    try:
        assert first_line.wait(timeout=120), "listen printed no hop"
        me = psutil.Process(process.pid)
        base, peak, at_base = me.memory_info().rss, 0, written[0]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and written[0] < 300 * MiB:
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.05)
        peak = max(peak, me.memory_info().rss)
        assert peak - base < 100 * MiB, (peak - base, written[0] - at_base)
    finally:
        stop.set()
        process.kill()
        process.wait(timeout=30)

