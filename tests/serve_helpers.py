"""Run the real `ast-audio serve` as a subprocess for the HTTP and browser tests.

The server is started with `--port 0`, so the kernel picks a free port with no race, and the port is read from
the one startup line the server prints. Every start has a timeout and every server is terminated (then killed)
when the test is done, whatever happened.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
AST_AUDIO = Path(sys.executable).with_name("ast-audio")
URL_LINE = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 120.0  # importing torch + loading the model on a busy 2-core machine
STOP_TIMEOUT_S = 10.0


@dataclass
class ServerProcess:
    """A running `ast-audio serve`: its base URL and everything it printed so far (stdout and stderr merged)."""

    process: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)


def _pump(stream: io.TextIOBase, sink: list[str], q: queue.Queue) -> None:
    for line in stream:
        sink.append(line)
        q.put(line)
    q.put(None)


@contextlib.contextmanager
def run_server(checkpoint: str | os.PathLike, *args: str, timeout_s: float = START_TIMEOUT_S,
               command: list[str] | None = None, **popen: Any) -> Iterator[ServerProcess]:
    """Start `ast-audio serve --checkpoint CHECKPOINT --port 0 ARGS...` (or `command`, which must print the same
    "listening on URL" line), yield it once it printed its URL. `popen`: more subprocess.Popen arguments."""
    if command is None:
        command = [str(AST_AUDIO), "serve", "--checkpoint", str(checkpoint), "--host", "127.0.0.1", "--port", "0",
                   *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)
    server = ServerProcess(process)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, server.lines, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.url:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"ast-audio serve printed no URL within {timeout_s:g} s:\n{server.output()}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                process.wait(timeout=STOP_TIMEOUT_S)
                raise RuntimeError(f"ast-audio serve exited with {process.returncode} before it was ready:\n"
                                   f"{server.output()}")
            match = URL_LINE.search(line)
            if match:
                server.url = match.group(1)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def raw_http(url: str, request: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the response until the server closes: (status, headers, body).

    For a request the server answers and keeps open, send `Connection: close`."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@dataclass
class Trickle:
    """What `trickle` saw: seconds until the server closed the connection, the bytes it answered, bytes sent."""

    closed_after_s: float
    answer: bytes
    sent: int


def trickle(url: str, data: bytes, interval_s: float, give_up_s: float, first: bytes = b"") -> Trickle:
    """Send `first` at once, then `data` one byte every `interval_s` seconds, until the server closes the connection.

    Raises AssertionError if the server still holds the connection open after `give_up_s` seconds.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=give_up_s) as sock:
        sock.sendall(first)
        start = time.monotonic()
        sent, answer = 0, b""
        while time.monotonic() - start < give_up_s:
            if sent < len(data):
                try:
                    sock.sendall(data[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
            readable, _, _ = select.select([sock], [], [], interval_s)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:  # the server closed the connection
                    break
                answer += chunk
        else:
            raise AssertionError(f"the server still held the connection after {give_up_s:g} s ({sent} of "
                                 f"{len(data)} bytes sent, answer {answer[:200]!r})")
        return Trickle(closed_after_s=time.monotonic() - start, answer=answer, sent=sent)


def write_pattern(path: Path, seconds: float, sample_rate: int = 16000, seed: int = 0) -> Path:
    """A 16-bit wav with a tone, a chirp and noise (so different windows get different scores)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t) * (t < seconds / 2)
    chirp = 0.3 * np.sin(2 * np.pi * (200.0 + 300.0 * t) * t) * (t >= seconds / 2)
    data = tone + chirp + 0.02 * rng.standard_normal(t.shape)
    sf.write(str(path), data.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


LABELS = ("Speech", "Music", "Dog bark", "Siren", "Tone")


def save_tiny_checkpoint(folder: Path) -> Path:
    """A tiny AST (2 layers, 32 wide, 1.3 s input) with readable labels, saved with save_model.

    The head is scaled by 40 so the random network gives spread-out scores (0.0 to 0.95 on `write_pattern`
    audio) instead of all ~0.5: the top label is unambiguous and some classes cross an event threshold.
    """
    import torch

    from ast_audio import AST, FrontendConfig, save_model
    from conftest import tiny_config

    torch.manual_seed(0)
    config = tiny_config()
    model = AST(config, frontend=FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim),
                labels=list(LABELS)).eval()
    with torch.no_grad():
        model.mlp_head[1].weight.mul_(40.0)
    return save_model(model, folder)
