"""The decisions of the inference layer that the command line needs without torch or numpy: output format names,
event grid and refinement names, embedding pools, live PCM formats, the default event threshold and the default
event windowing policy. The library modules (`formats.py`, `events.py`, `embed.py`, `live.py`, `pipeline.py`) and
`ast_audio.cli` import these objects; there is no copy to keep equal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TAG_FORMATS: Final = ("table", "json", "csv")
EVENT_FORMATS: Final = ("json", "csv", "audacity", "srt", "dcase")
LIVE_FORMATS: Final = ("live", "jsonl")  # `ast-audio listen`: a terminal view or one JSON line per event/hop

# How window scores are put on a time grid before thresholding (`EventConfig.grid`).
GRIDS: Final = ("cells", "mean", "max")
# How boundaries are refined after thresholding (`EventConfig.refine`): "auto" is "energy" for a clip model's window
# scores and "none" for a frame model's frame scores (`ast_audio.infer.pipeline` measures the energy only where it
# is used; `detect_events` refines when it is given an Energy).
REFINES: Final = ("auto", "none", "energy")

# Embedding pooling (`Embedder(pool=)`): tokens (cls and dist), mean of the patch tokens, none (every token).
POOLS: Final = ("tokens", "mean", "none")

# Raw PCM sample formats a live stream accepts (`PcmDecoder`; `ast-audio listen --dtype`, the WebSocket's format).
PCM_FORMATS: Final = ("s16le", "f32le")

# The decision threshold on a class score (events, F1 at a threshold, live events) and the hysteresis ratio
# (low threshold = ratio x high) when the user gives none.
DEFAULT_THRESHOLD: Final = 0.5
DEFAULT_HYSTERESIS: Final = 0.5


@dataclass(frozen=True)
class DetectionDefaults:
    """The detection options whose default depends on the kind of model (`EventConfig`'s fields left None):
    median filter length (odd, in grid pieces: overlap-added window pieces or frame columns), the shortest event
    kept and the largest gap merged, in seconds."""

    median_windows: int
    min_duration_s: float
    merge_gap_s: float


# A clip model's overlap-added window scores are already smooth (each piece averages ten windows), and its energy
# refinement places the boundaries: nothing more by default. A frame model's 0.1 s columns are scored one by one:
# a median over 3 columns (0.3 s) removes single-column flickers, events under 0.2 s are dropped and those of a class
# at most 0.2 s apart merged (the settings chosen on the validation scenes of bench/sed_experiment.py, with
# threshold and hysteresis 0.5 as above; docs/events.md, "Clip models vs frame models").
CLIP_DETECTION: Final = DetectionDefaults(median_windows=1, min_duration_s=0.0, merge_gap_s=0.0)
FRAME_DETECTION: Final = DetectionDefaults(median_windows=3, min_duration_s=0.2, merge_gap_s=0.2)

# Event detection's default window and hop, relative to the model's input length and to the window, so that they
# suit a 2 s demo model and a 10.24 s AudioSet AST alike (docs/events.md has the measurements behind them). A window
# of half the input halves how far a window-scale boundary can be off while the model still sees enough of a
# sound (shorter inputs are zero-padded, as short training clips are); the hop sets how finely the overlap-added
# scores ramp across a boundary.
WINDOW_FRACTION: Final = 0.5
HOP_FRACTION: Final = 0.1
# A frame model's live hop when the user gives none: its columns are final when the hop arrives (latency = hop + one
# pass); `ast_audio.infer.windowing.live_windowing`.
FRAME_LIVE_HOP_S: Final = 1.0
