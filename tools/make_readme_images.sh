#!/usr/bin/env bash
# Regenerate docs/images/events.png and docs/images/explain.png, offline, from nothing:
#   1. train the demo's small AST (`ast-audio demo`: tone / chirp / noise_burst / click_train, ~1 min of CPU);
#   2. write a 40 s scene of background noise with demo sounds at known seconds (printed, and saved as truth.csv);
#   3. `ast-audio events ... --plot docs/images/events.png` and `ast-audio explain ... -o docs/images/explain.png`.
# Usage: tools/make_readme_images.sh [WORK_DIR]   (default /tmp/ast-audio-readme; PYTHON overrides the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-/tmp/ast-audio-readme}
mkdir -p "$WORK" docs/images

if [ ! -f "$WORK/demo/model/config.json" ]; then
    "$PY" -m ast_audio demo --out "$WORK/demo" --seconds-budget 60
fi

# A scene with known truth: each sound is one demo clip (its own 1-2 s, with its noise floor) added at a known time.
"$PY" - "$WORK" <<'EOF'
import csv, sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ast_audio.demo import SAMPLE_RATE, synth_clip

work = Path(sys.argv[1])
rng = np.random.default_rng(3)
seconds = 40.0
scene = 0.005 * rng.standard_normal(int(seconds * SAMPLE_RATE))
placed = [("tone", 4.0), ("chirp", 11.0), ("click_train", 18.0), ("noise_burst", 25.0), ("tone", 31.0),
          ("chirp", 35.0)]
with open(work / "truth.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["label", "onset", "offset"])
    for kind, at in placed:
        clip = synth_clip(kind, rng)
        start = int(at * SAMPLE_RATE)
        scene[start:start + len(clip)] += clip
        writer.writerow([kind, at, round(at + len(clip) / SAMPLE_RATE, 3)])
        print(f"placed {kind:12s} at {at:5.1f} - {at + len(clip) / SAMPLE_RATE:5.2f} s")
sf.write(str(work / "scene.wav"), scene.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
EOF

"$PY" -m ast_audio events "$WORK/scene.wav" --checkpoint "$WORK/demo/model" --hop 0.25 --median 3 \
    --threshold 0.8 --min-duration 0.5 --format csv -o "$WORK/events.csv" --plot docs/images/events.png
cat "$WORK/events.csv"
"$PY" -m ast_audio explain "$WORK/scene.wav" --checkpoint "$WORK/demo/model" --start 10.5 --class chirp \
    -o docs/images/explain.png --width 1000 --height 500
ls -l docs/images/events.png docs/images/explain.png
