#!/usr/bin/env bash
# Regenerate docs/images/events.png and docs/images/explain.png, offline, from nothing:
#   1. train the demo's small AST (`ast-audio demo`: tone / chirp / noise_burst / click_train plus background-only
#      clips and two-class mixtures, multi-label, 40 epochs);
#   2. write a 30 s scene of demo sounds at known times on a quiet background (`ast-audio scenes`: strong.tsv);
#   3. `ast-audio events` with its default settings, `--plot docs/images/events.png`, scored by `eval-events`;
#      `ast-audio explain ... -o docs/images/explain.png` on the scene's first chirp.
# Usage: tools/make_readme_images.sh [WORK_DIR]   (default /tmp/ast-audio-readme; PYTHON overrides the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-/tmp/ast-audio-readme}
mkdir -p "$WORK" docs/images

if [ ! -f "$WORK/demo/model/config.json" ]; then
    # a generous budget: training stops after 40 epochs anyway (~30 s on an idle 2-core machine)
    "$PY" -m ast_audio demo -o "$WORK/demo" --force --seconds-budget 900
fi

"$PY" -m ast_audio scenes "$WORK/scene" --count 1 --seconds 30 --seed 4 --force

"$PY" -m ast_audio events "$WORK/scene/scene_000.wav" --checkpoint "$WORK/demo/model" --format dcase \
    -o "$WORK/events.tsv" --force --scores-dir "$WORK/scores" --plot docs/images/events.png --plot-truth "$WORK/scene/strong.tsv" \
    --no-progress
cat "$WORK/events.tsv"
"$PY" -m ast_audio eval-events --truth "$WORK/scene/strong.tsv" --pred "$WORK/events.tsv" --scores-dir "$WORK/scores"

chirp=$(awk -F'\t' '$4 == "chirp" {printf "%.2f", ($2 > 0.3 ? $2 - 0.3 : 0); exit}' "$WORK/scene/strong.tsv")
"$PY" -m ast_audio explain "$WORK/scene/scene_000.wav" --checkpoint "$WORK/demo/model" --start "$chirp" \
    --class chirp -o docs/images/explain.png --force --width 1000 --height 500
ls -l docs/images/events.png docs/images/explain.png
