"""`ast-audio listen` run as the real script: raw PCM on stdin, a file at real-time pace, a hop too small for the CPU,
the microphone's one-line error, the terminal view."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ast_audio import AST
from ast_audio.infer.events import EventConfig
from ast_audio.infer.live import StreamingTagger
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_cli, run_main, tiny_model

LABELS = ("chirp", "noise", "tone")
# The untrained model's sigmoid scores sit near 0.5: these options give events (as in test_events_cli.py).
def run_listen(*args: object, stdin: bytes | None = None, timeout: float = 120,
               text: bool = False) -> subprocess.CompletedProcess:
    """`ast-audio listen ARGS` with bytes on stdin (text=True: str output, no stdin)."""
    return run_cli("listen", *args, input=stdin, text=text, timeout=timeout)


EVENTS = ("--threshold", "0.45", "--hysteresis", "0.9")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("listen")
    base = tiny_model(seed=2, num_classes=3)
    model = AST(base.config, frontend=base.frontend, labels=LABELS, multi_label=True)
    model.load_state_dict(base.state_dict())
    save_model(model, root / "ckpt")
    return root / "ckpt"


def library_hops(ckpt: Path, data: np.ndarray, rate: int, **kw) -> list:
    tagger = Tagger(load_model(ckpt))
    streamer = StreamingTagger(tagger, rate, data.shape[1], events=EventConfig(threshold=0.45, hysteresis=0.9), **kw)
    return list(streamer.run([data]))


def test_stdin_pcm_jsonl_equals_library(ckpt):
    """22.05 kHz stereo s16le on stdin: one JSON object per hop, with the window times, scores and events the Python
    API gives for the same samples (the CLI reads the pipe in whatever pieces it delivers)."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal((22050 * 4, 2)) * 3000).astype("<i2")  # (N, 2) interleaved on the wire
    run = run_listen("--checkpoint", ckpt, "--precision", "fp32", "--input", "-", "--rate", "22050", "--channels", "2",
                 "--window", "1.0", "--hop", "0.5", "--format", "jsonl", *EVENTS, stdin=pcm.tobytes())
    assert run.returncode == 0, run.stderr.decode()
    got = [json.loads(line) for line in run.stdout.decode().splitlines()]
    expected = library_hops(ckpt, pcm.astype(np.float32) / 32768, 22050, window_s=1.0, hop_s=0.5)
    assert len(got) == len(expected) == 7  # windows at 0, 0.5, ..., 3.0 s of a 4 s stream
    for g, e in zip(got, expected, strict=True):
        assert (g["start_s"], g["end_s"]) == (pytest.approx(e.start_s), pytest.approx(e.end_s))
        assert [t["label"] for t in g["top"]] == [label for label, _ in e.top(5)]
        np.testing.assert_allclose([t["score"] for t in g["top"]], [s for _, s in e.top(5)], atol=2e-6)
        assert g["opened"] == [o.to_dict() for o in e.opened] and g["closed"] == [c.to_dict() for c in e.closed]
    assert any(g["closed"] for g in got) and any(g["opened"] for g in got)  # the options do produce events


def test_realtime_file_and_plain_lines(ckpt, tmp_path):
    """`--input FILE --realtime` plays a 2 s file at real-time pace (it cannot finish sooner) and prints, stdout not
    being a terminal, one plain line per scored window; the windows are the library's. --allow-skip: on a busy
    machine a window may take longer than the 0.5 s hop, and then it is skipped (and said), not refused."""
    import time

    data = (0.2 * np.random.default_rng(1).standard_normal((16000 * 2, 1))).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), data, 16000, subtype="FLOAT")
    t0 = time.monotonic()
    run = run_listen("--checkpoint", ckpt, "--precision", "fp32", "--input", tmp_path / "a.wav", "--realtime",
                 "--window", "1.0", "--hop", "0.5", "--allow-skip", "--only", "tone", *EVENTS, text=True)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - t0 >= 2.0  # paced: the last block is read no sooner than 2 s after the first
    lines = run.stdout.splitlines()
    assert "\x1b[" not in run.stdout  # no redrawing when stdout is a pipe
    expected = [h for h in library_hops(ckpt, data, 16000, window_s=1.0, hop_s=0.5) if h.scores is not None]
    skipped = int(run.stderr.split("skipped ")[1].split(" of")[0]) if "skipped " in run.stderr else 0
    assert len(lines) == 4 - skipped  # three windows (less those skipped), then the events the end closed
    scored = lines[:-1]
    ends = [float(line.split()[0]) for line in scored]
    assert set(ends) <= {h.end_s for h in expected} and ends == sorted(ends)
    assert all(line.split()[2] == "tone" for line in scored)  # --only: the view shows the kept classes
    assert "-tone 0.00-2.00" in lines[-1] and "chirp" not in run.stdout
    if not skipped:
        assert "+tone @0.00" in scored[0]


def test_tiny_hop_refused_then_skipped_windows_reported(ckpt, tmp_path, capsys):
    """A hop below one window's compute is refused at start with the measured time; with --allow-skip a real-time
    source skips windows, says so once on stderr and counts them in every hop after."""
    data = (0.2 * np.random.default_rng(2).standard_normal((16000 * 2, 1))).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), data, 16000, subtype="FLOAT")
    rc, _, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--input", tmp_path / "a.wav", "--realtime",
                          "--hop", "0.0001")
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--hop 0.0001 s is shorter than one window's compute here" in err
    measured = float(err.split("here (")[1].split(" s measured")[0])
    assert measured > 0.0001

    run = run_listen("--checkpoint", ckpt, "--input", tmp_path / "a.wav", "--realtime", "--window", "0.5",
                 "--hop", "0.0001", "--allow-skip", "--format", "jsonl", text=True)
    assert run.returncode == 0, run.stderr
    hops = [json.loads(line) for line in run.stdout.splitlines()]
    hops = [h for h in hops if h["top"]]  # the scored windows (not the end-of-stream hop closing events)
    total = hops[-1]["index"] + 1
    assert hops[-1]["skipped"] > 0 and len(hops) + hops[-1]["skipped"] == total  # each window scored or counted
    assert [h["skipped"] for h in hops] == sorted(h["skipped"] for h in hops)
    assert sum("warning" in h for h in hops) == 1
    assert run.stderr.count("falling behind") == 1 and f"skipped {hops[-1]['skipped']} of {total}" in run.stderr


def test_microphone_missing_and_bad_options(ckpt, capsys):
    """No PortAudio (or no sounddevice, or no input device) here: one line saying what to install or use instead.
    Unknown class names and bad PCM options stop the command before it listens."""
    rc, _, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--precision", "fp32")
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "microphone" in err and "--input -" in err
    rc, _, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--input", "-", "--only", "Dog")
    assert rc == 1 and "unknown class name" in err and "Traceback" not in err
    rc, _, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--input", "-", "--dtype", "u8")
    assert rc == 2 and "invalid choice" in err
    rc, _, err = run_main(capsys, "listen", "--checkpoint", ckpt, "--input", "missing.wav")
    assert rc == 1 and "missing.wav" in err and "Traceback" not in err


def test_terminal_view_redraws(ckpt):
    """On a terminal the live format redraws one compact view (bars, open events) per hop."""
    pcm = (np.random.default_rng(3).standard_normal(16000 * 2) * 3000).astype("<i2").tobytes()
    leader, follower = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ast_audio", "listen", "--checkpoint", str(ckpt), "--precision",
                             "fp32", "--input", "-", "--window", "1.0", "--hop", "0.5", *EVENTS],
                            stdin=subprocess.PIPE, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    proc.stdin.write(pcm)
    proc.stdin.close()
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    os.close(leader)
    text = out.decode()
    assert text.count("\x1b[H\x1b[J") == 4  # windows at 0, 0.5 and 1.0 s of a 2 s stream, then the end
    assert "recent: " in text and "0.00-2.00 s" in text  # the events the end closed, in the last view
    assert "█" in text and "open:" in text and "chirp" in text


def test_s16_data_read_as_f32_suggests_the_dtype_and_empty_stdin_is_said(ckpt):
    """Issue 21: 16-bit PCM read with --dtype f32le used to say "NaN ... repair or re-export the file" (there is no
    file); now the one line names --dtype s16le. An empty stdin used to exit 0 with no output; now it says that no
    audio arrived."""
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(16000 * 3) * 8000).astype("<i2")
    run = run_listen("--checkpoint", ckpt, "--input", "-", "--dtype", "f32le", "--format", "jsonl", stdin=pcm.tobytes())
    err = run.stderr.decode().strip()
    assert run.returncode != 0 and "--dtype s16le" in err and "\n" not in err and "Traceback" not in err, err
    run = run_listen("--checkpoint", ckpt, "--input", "-", "--format", "jsonl", stdin=b"")
    err = run.stderr.decode().strip()
    assert run.returncode == 1 and "no audio arrived on standard input" in err and "\n" not in err, err
    assert run.stdout == b""
