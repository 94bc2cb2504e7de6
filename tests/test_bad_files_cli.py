"""`ast-audio tag` on every kind of bad file: one stderr line each, naming the file and what it is (issue 10,
item 11), and the good files still tagged. Run as the real script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from ast_audio.weights.checkpoint import save_model
from conftest import tiny_model, write_tone


def test_tag_reports_each_bad_file_in_one_line_and_tags_the_rest(tmp_path):
    save_model(tiny_model(), tmp_path / "ckpt")
    good = write_tone(tmp_path / "good.wav", seconds=2.0)
    t = np.arange(48000) / 16000
    sf.write(str(tmp_path / "whole.mp3"), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="MP3")
    mp3 = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "half.mp3").write_bytes(mp3[:len(mp3) // 2])  # libmpg123 decodes up to the cut, and warns on fd 2
    (tmp_path / "head.mp3").write_bytes(mp3[:300])  # libsndfile: "File does not exist or is not a regular file"
    sf.write(str(tmp_path / "whole.flac"), np.zeros(48000, dtype=np.float32), 16000)
    flac = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[:len(flac) // 2])
    (tmp_path / "loop1.wav").symlink_to(tmp_path / "loop2.wav")
    (tmp_path / "loop2.wav").symlink_to(tmp_path / "loop1.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "folder.wav").mkdir()
    bad = {
        "half.mp3": "truncated or corrupt MP3 file",
        "head.mp3": "truncated or corrupt MP3 file",
        "cut.flac": "truncated or corrupt FLAC file",
        "loop1.wav": "symlink loop",
        "missing.wav": "no such file",
        "empty.wav": "file is empty",
        "folder.wav": "is a directory",
    }
    paths = [str(good)] + [str(tmp_path / name) for name in bad]
    run = subprocess.run([sys.executable, "-m", "ast_audio", "tag", *paths, "--checkpoint", str(tmp_path / "ckpt"),
                          "--format", "json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert len(lines) == len(bad), run.stderr  # exactly one line per bad file: no libmpg123 warnings, no traceback
    for line, (name, message) in zip(lines, bad.items(), strict=True):
        assert line.startswith(f"ast-audio: {tmp_path / name}: ") and message in line, line
        assert "does not exist" not in line and "System error" not in line
    assert [d["file"] for d in json.loads(run.stdout)] == [str(good)]
