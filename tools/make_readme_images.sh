#!/usr/bin/env bash
# Regenerate docs/images/events.png and docs/images/explain.png, offline, from nothing:
#   1. train the demo's small AST (`ast-audio demo`: tone / chirp / noise_burst / click_train, 40 epochs, ~25 s of CPU);
#   2. write a scene of demo sounds one after another at known seconds (printed, and saved as truth.csv);
#   3. `ast-audio events ... --plot docs/images/events.png` and `ast-audio explain ... -o docs/images/explain.png`.
# Usage: tools/make_readme_images.sh [WORK_DIR]   (default /tmp/ast-audio-readme; PYTHON overrides the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-/tmp/ast-audio-readme}
mkdir -p "$WORK" docs/images

if [ ! -f "$WORK/demo/model/config.json" ]; then
    # a generous budget: training stops after 40 epochs anyway (~25 s on an idle 2-core machine)
    "$PY" -m ast_audio demo --out "$WORK/demo" --seconds-budget 900
fi

# A scene with known truth: demo clips (1-2 s each, with their own noise floor) one after another, 0.3 s apart.
# The demo model is single-label (softmax) and was never shown silence, so the scene has no long quiet stretches.
"$PY" - "$WORK" <<'EOF'
import csv, sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ast_audio.demo import SAMPLE_RATE, synth_clip

work = Path(sys.argv[1])
rng = np.random.default_rng(3)
order = ["tone", "chirp", "click_train", "noise_burst", "chirp", "tone", "noise_burst", "click_train", "tone",
         "chirp", "click_train", "noise_burst"]
clips = [synth_clip(kind, rng) for kind in order]
gap = int(0.3 * SAMPLE_RATE)
scene = 0.002 * rng.standard_normal(sum(len(c) + gap for c in clips) + gap)
at = gap
with open(work / "truth.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["label", "onset", "offset"])
    for kind, clip in zip(order, clips):
        scene[at:at + len(clip)] += clip
        onset, offset = at / SAMPLE_RATE, (at + len(clip)) / SAMPLE_RATE
        writer.writerow([kind, round(onset, 3), round(offset, 3)])
        print(f"placed {kind:12s} at {onset:6.2f} - {offset:6.2f} s")
        at += len(clip) + gap
sf.write(str(work / "scene.wav"), scene.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
EOF

"$PY" -m ast_audio events "$WORK/scene.wav" --checkpoint "$WORK/demo/model" --window 1.0 --hop 0.1 --median 3 \
    --threshold 0.8 --min-duration 0.3 --format csv -o "$WORK/events.csv" \
    --plot docs/images/events.png --plot-truth "$WORK/truth.csv"
cat "$WORK/events.csv"
"$PY" -m ast_audio explain "$WORK/scene.wav" --checkpoint "$WORK/demo/model" --start 14.8 --class chirp \
    -o docs/images/explain.png --width 1000 --height 500
ls -l docs/images/events.png docs/images/explain.png
