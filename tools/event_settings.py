"""Event F1 and segment F1 of `ast-audio events`' settings on generated scenes: the measurements behind the defaults
in docs/events.md.

Usage: python tools/event_settings.py MODEL SCENES_DIR [WINDOW_FRACTION ...]
  MODEL: e.g. the demo's out/model; SCENES_DIR: from `ast-audio scenes` (scene_*.wav, strong.tsv, durations.tsv);
  WINDOW_FRACTION: windows as fractions of the model's input (default 0.25 0.5 1.0); the hop is a tenth of each.
Prints one line per (window, grid, refinement) at threshold 0.5, hysteresis 0.5, scored by sed_eval.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ast_audio.infer.evaluate_events import read_durations, read_truth, sed_eval_f1
from ast_audio.infer.events import Energy, EventConfig, detect_events
from ast_audio.infer.tagger import Tagger, score_stream
from ast_audio.infer.windowing import event_windowing
from ast_audio.weights.checkpoint import load_model


def main(model_dir: str, scenes: str, *fractions: str) -> None:
    tagger = Tagger(load_model(model_dir))
    folder = Path(scenes)
    truth, durations = read_truth(folder / "strong.tsv"), read_durations(folder / "durations.tsv")
    files = sorted(folder.glob("scene_*.*"))
    energy = {f.stem: Energy.from_file(f, tagger.sample_rate) for f in files}
    for fraction in [float(x) for x in fractions] or [0.25, 0.5, 1.0]:
        window = fraction * tagger.max_window_s
        windowing = event_windowing(tagger.model, window)  # the events hop for this window: a tenth of it
        timelines = {f.stem: score_stream(tagger, f, windowing=windowing, batch_size=32) for f in files}
        for grid in ("cells", "max", "mean"):
            for refine in ("none", "energy"):
                config = EventConfig(threshold=0.5, hysteresis=0.5, grid=grid, interpolate=grid != "cells",
                                     refine=refine)
                pred = {k: [(e.onset_s, e.offset_s, e.label) for e in detect_events(t, config, energy[k])]
                        for k, t in timelines.items()}
                r = sed_eval_f1({k: truth.get(k, []) for k in timelines}, pred, durations)
                print(f"window {window:.3f} s  grid {grid:5s} refine {refine:6s}  event F1 {r['event_f1']:.3f}  "
                      f"segment F1 {r['segment_f1']:.3f}  events {sum(map(len, pred.values()))}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
