"""A reader that stops early (`ast-audio labels | head`) ends the output quietly, as Unix tools do: no message on
stderr, exit status 141 (128 + SIGPIPE, what a shell shows for a tool killed by SIGPIPE), and the process ends
(issue 19, item 6: `listen ... | head` printed "ast-audio: error: [Errno 32] Broken pipe"). Each command runs as the
real script with its stdout a pipe whose reader closes after the first line (`| head -1`) or before any output
(`| true`).

A reader that leaves while one large write is under way (`labels` writes its table at once) is not even an error
in Python: the kernel returns the bytes written so far and Python's buffered writer drops the rest, so the command
exits 0. The next write, or a first write after the reader left, fails with EPIPE: that is the case `cli.main`
turns into the quiet exit 141, which the `| true` runs pin down."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_model, write_tone

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sets the pipe's size with Linux's F_SETPIPE_SZ")

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 4096  # the smallest pipe: any output longer than this waits for the reader, who leaves first
EXIT_BROKEN_PIPE = 141


def run_into_closed_pipe(*args: str, read_line: bool = True, stdin: bytes | None = None,
                         timeout: float = 180) -> tuple[int, bytes, str]:
    """Run `python -m ast_audio ARGS` with stdout a 4 KiB pipe, read one line from it (or nothing, with
    `read_line=False`) and close it; returns (exit status, the line, stderr). `stdin` is written from a thread and
    stdin is left open, so a reader thread blocked on it must not keep the process alive. Fails if the process has
    not ended `timeout` s after the pipe closed."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, "-m", "ast_audio", *map(str, args)], stdout=write_end,
                                   stderr=err, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        os.close(write_end)
        feeder = None
        if stdin is not None:
            def feed() -> None:
                try:
                    process.stdin.write(stdin)
                    process.stdin.flush()
                except (BrokenPipeError, ValueError):  # the process ended before reading it all
                    pass

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
        try:
            with os.fdopen(read_end, "rb") as out:
                line = out.readline() if read_line else b""
            status = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        if feeder is not None:
            feeder.join(timeout=30)
        err.seek(0)
        return status, line, err.read().decode()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from ast_audio.weights.checkpoint import save_model

    return save_model(tiny_model(seed=2), tmp_path_factory.mktemp("pipe") / "ckpt")


def test_labels_into_a_closed_pipe_ends_quietly():
    """`labels` prints 527 lines (15 KB): `| head -1` and `| true` end it without a word."""
    status, line, err = run_into_closed_pipe("labels")
    assert line.split()[:2] == [b"0", b"Speech"]  # the first class's row
    assert err == "" and status in (0, EXIT_BROKEN_PIPE)
    status, _, err = run_into_closed_pipe("labels", read_line=False)
    assert err == "" and status == EXIT_BROKEN_PIPE


def test_tag_into_a_closed_pipe_ends_quietly(ckpt, tmp_path):
    """`tag --format json` of 30 files (more than the pipe holds): `| head -1` and `| true`."""
    clip = write_tone(tmp_path / "a.wav", seconds=1.0)
    args = ("tag", "--checkpoint", ckpt, "--precision", "fp32", "--format", "json", *[clip] * 30)
    status, line, err = run_into_closed_pipe(*args)
    assert line.strip() and err == "" and status in (0, EXIT_BROKEN_PIPE)
    status, _, err = run_into_closed_pipe(*args, read_line=False)
    assert err == "" and status == EXIT_BROKEN_PIPE


def test_listen_into_a_closed_pipe_ends_quietly_with_stdin_still_open(ckpt):
    """`listen --input -` fed 60 s of PCM on a stdin that stays open: after the first hop's line the reader leaves;
    the command stops its reader thread and loop and ends, without a message."""
    pcm = (np.random.default_rng(0).standard_normal(16000 * 60) * 3000).astype("<i2")
    status, line, err = run_into_closed_pipe("listen", "--checkpoint", ckpt, "--precision", "fp32", "--input", "-",
                                             "--window", "1.0", "--hop", "0.5", "--format", "jsonl",
                                             stdin=pcm.tobytes())
    assert line.startswith(b'{"index": 0')
    assert err == "" and status == EXIT_BROKEN_PIPE


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(capfd, monkeypatch):
    """A BrokenPipeError from elsewhere (a subprocess, a socket) while stdout is fine is reported as before."""
    from ast_audio.cli import labels as labels_cli
    from conftest import run_main

    def broken(args) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(labels_cli, "cmd_labels", broken)
    rc, _, err = run_main(capfd, "labels")  # capfd: stdout keeps a descriptor (a file, whose reader is there)
    assert rc == 1 and "ast-audio: error: [Errno 32] Broken pipe" in err
