"""`ast-audio tag` streams its files: memory does not grow with the file's length (issue 10, item 3)."""

from __future__ import annotations

import json

import pytest

from ast_audio.infer.stream import window_starts
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import tiny_model
from helpers import peak_rss, write_noise_file


@pytest.mark.slow
def test_hour_long_8k_file_is_tagged_with_bounded_memory(tmp_path):
    """Peak RSS of `ast-audio tag` on a 60 min 8 kHz file (streamed, resampled to 16 kHz) stays within 64 MB of a
    10 min file's, while the decoded hour alone (float32 at 16 kHz) is 230 MB; before streaming the hour took
    687 MB against 313 MB for 10 min. The hour's windows are all there and end at 3600 s."""
    save_model(tiny_model(), tmp_path / "ckpt")
    short = write_noise_file(tmp_path / "ten.wav", 10, sample_rate=8000)
    hour = write_noise_file(tmp_path / "hour.wav", 60, sample_rate=8000)
    common = ("--checkpoint", tmp_path / "ckpt", "--window", "1.28", "--hop", "1.28", "--batch-size", "16",
              "--format", "json", "--top-k", "1", "-o", tmp_path / "tags.json", "--force")
    rss_short, seconds_short = peak_rss("tag", short, *common)
    rss_hour, seconds_hour = peak_rss("tag", hour, *common)
    print(f"\npeak RSS: 10 min {rss_short:.0f} MB, 60 min {rss_hour:.0f} MB; audio seconds per wall second: "
          f"{600 / seconds_short:.0f} (10 min), {3600 / seconds_hour:.0f} (60 min)")
    assert rss_hour < 1536  # 1.5 GB, as for `ast-audio events`
    assert rss_hour - rss_short < 64  # does not grow with the duration (the hour's samples alone are 230 MB)
    (doc,) = json.loads((tmp_path / "tags.json").read_text())
    assert doc["duration_s"] == pytest.approx(3600.0)
    window = Tagger(load_model(tmp_path / "ckpt")).window_and_hop(1.28, 1.28)[0]
    assert len(doc["windows"]) == len(window_starts(3600 * 16000, window, window))
    assert doc["windows"][-1]["end_s"] == pytest.approx(3600.0)
