"""bench/sed_experiment.py (issue 20's accuracy experiment) in its small preset, end to end through the real CLI:
scenes in the harder conditions -> `train --recipe sed` from the demo model (6 short epochs) -> the clip model through
`events` and the frame models through `events` too, each with its defaults -> `eval-events` on held-out scenes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "sed_experiment.py"
CLASSES = ("tone", "chirp", "noise_burst", "click_train")
# The small preset trains 6 epochs of 100 scenes of 20 s (570 steps; best validation epoch 3). Measured (seeds fixed,
# one thread, the demo model of seed 0): the trained frame model against the same model with an untrained frame
# head, event F1 0.318 vs 0.000, segment F1 0.694 vs 0.520, PSDS2 0.560 vs 0.355 (PSDS1 0.000 for both: too early).
# The asserted margins are about half of the measured ones.
EVENT_F1_MIN = 0.15
SEGMENT_MARGIN = 0.07
PSDS2_MARGIN = 0.1


@pytest.mark.slow
def test_small_experiment_frame_model_beats_an_untrained_frame_head(demo_run, tmp_path):
    out, proc = demo_run  # `ast-audio demo` (tests/conftest.py)
    assert proc.returncode == 0, proc.stderr
    work = tmp_path / "experiment"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--demo-model", str(out / "model"), "-o", str(work)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = sorted((work / "test").glob("scene_*.wav"))
    assert len(tests) == 2
    for folder in (work / "clip", work / "frame", work / "untrained" / "eval"):
        assert (folder / "events.tsv").read_text().startswith("filename\tonset\toffset\tevent_label\n")
        assert sorted(p.stem for p in (folder / "scores").glob("*.tsv")) == [p.stem for p in tests]
        header = (folder / "scores" / "scene_000.tsv").read_text().split("\n", 1)[0].split("\t")
        assert header[:2] == ["onset", "offset"] and sorted(header[2:]) == sorted(CLASSES)
        assert json.loads((folder / "eval.json").read_text())["files"] == 2
    assert (work / "sed" / "model").is_dir() and (work / "sed" / "metrics.csv").read_text().count("\n") == 7
    results = json.loads((work / "results.json").read_text())
    clip, untrained, trained = results["rows"]
    assert "clip" in clip["model"] and "untrained" in untrained["model"] and "sed" in trained["model"]
    # one pass per window of the 2 s demo input for frame models; ten per window for the clip model's defaults
    assert trained["passes_per_s"] == untrained["passes_per_s"] < 0.6 < 5 < clip["passes_per_s"]
    assert trained["event_f1"] >= EVENT_F1_MIN > untrained["event_f1"], results
    assert trained["segment_f1"] >= untrained["segment_f1"] + SEGMENT_MARGIN, results
    assert trained["psds2"] >= untrained["psds2"] + PSDS2_MARGIN, results
