"""Window and hop as one value: `Windowing`, in samples at the model rate, built once per use by one policy.

Every use of a model over audio longer than a window places windows the same way (`ast_audio.infer.stream`); what
differs is how long they are and how far apart. That decision is made here, once, from the model and the user's
options (seconds, or None for the default), and the result travels as a `Windowing` through the CLI, the library
(`Tagger.tag`, `score_stream`, `StreamingTagger`, `EventPipeline`) and the server. Seconds exist only at the edges:
the options going in, and `window_s` / `hop_s` for output.

The policies (defaults; the user's values are checked against the same rules):

- `tag_windowing` (tag, embed, archive, a clip model's live stream): window = the model's input, hop = half of it.
- `event_windowing`: a clip model: window = `WINDOW_FRACTION` (half) of the input, hop = `HOP_FRACTION` (a tenth) of
  the window; a frame model: its input's t_dim frame columns, hop = window (each sample scored once) or half of it.
- `live_windowing`: a clip model as `tag_windowing`; a frame model: its input's columns, hop `FRAME_LIVE_HOP_S`
  (at least one column, at most the window).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import column_hop_samples
from ..errors import ConfigError
from .names import FRAME_LIVE_HOP_S, HOP_FRACTION, WINDOW_FRACTION
from .stream import window_count


@dataclass(frozen=True)
class Windowing:
    """Where the model's passes go over audio at `rate` Hz: windows of `window` samples every `hop` samples.

    `column` is None for a clip model's windows (scored whole); for a frame model's windows it is the samples of one
    frame column (its scores are per column, `ast_audio.infer.frames`) and `window` is a whole number of columns.
    """

    rate: int
    window: int
    hop: int
    column: int | None = None

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.window > 0 and 0 < self.hop):
            raise ConfigError(f"a windowing needs a positive rate, window and hop, got {self}")

    @property
    def window_s(self) -> float:
        return self.window / self.rate

    @property
    def hop_s(self) -> float:
        return self.hop / self.rate

    @property
    def frames(self) -> bool:
        """True for a frame model's windows (scores per column)."""
        return self.column is not None

    @property
    def frame_s(self) -> float | None:
        """Seconds per frame column (None for a clip model's windows)."""
        return None if self.column is None else self.column / self.rate

    @property
    def overlap(self) -> bool:
        """A frame model's windows overlapping (hop shorter than the window)."""
        return self.frames and self.hop < self.window

    def count(self, num_samples: int) -> int:
        """Windows placed over `num_samples` samples (`ast_audio.infer.stream.window_count`)."""
        return window_count(num_samples, self.window, self.hop)


# A policy: (model, window_s, hop_s) -> its checked Windowing.
Policy = Callable[[Any, float | None, float | None], Windowing]


def _as_float(value: Any) -> Any:
    """Numbers as float, an int beyond float range as inf (refused by the checks instead of overflowing in
    math.isfinite or a message's format); anything else unchanged, for the checks to name."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return value


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def clip_windowing(model: Any, window_s: float | None, hop_s: float | None, *, default_window: int,
                   default_hop: Callable[[int], int]) -> Windowing:
    """A clip model's windows: `window_s` (default `default_window` samples, at most the model's input, at least one
    analysis frame) and `hop_s` in (0, window_s] (default `default_hop(window)` samples). ConfigError otherwise."""
    frontend = model.frontend
    rate, input_s = frontend.sample_rate, frontend.duration_s
    window_s, hop_s = _as_float(window_s), _as_float(hop_s)
    if window_s is None:
        window = default_window
        window_s = window / rate
    else:
        if not (_seconds(window_s) and window_s > 0):
            raise ConfigError(f"window_s must be a positive number of seconds, got {window_s!r}")
        # Range-check in samples *before* rounding: a huge finite window_s (1e308) times the rate is inf, and
        # round(inf) raises OverflowError. Anything that would round above the model's input is refused here.
        if window_s * rate >= round(input_s * rate) + 0.5:
            raise ConfigError(f"window_s={window_s:g} s is longer than the model's input of {input_s:g} s "
                              f"({frontend.target_length} frames), so audio would be cut off; use window_s <= "
                              f"{input_s:g}")
        window = round(window_s * rate)
        if window < frontend.window_samples:
            raise ConfigError(f"window_s={window_s:g} s is shorter than one {frontend.frame_length_ms:g} ms analysis "
                              "frame; use a longer window")
    if hop_s is None:
        hop = default_hop(window)
    else:
        if not (_seconds(hop_s) and 0 < hop_s <= window_s):
            raise ConfigError(f"hop_s must be in (0, window_s = {window_s:g}] seconds (a larger hop would skip "
                              f"audio), got {hop_s!r}")
        hop = max(1, round(hop_s * rate))
    return Windowing(rate, window, hop)


def tag_windowing(model: Any, window_s: float | None = None, hop_s: float | None = None) -> Windowing:
    """Tagging's windows: default the model's input, hop half of it (an event cut by one window boundary is centred
    in another)."""
    return clip_windowing(model, window_s, hop_s, default_window=model.frontend.input_samples,
                          default_hop=lambda window: max(1, window // 2))


def frame_grid(model: Any) -> tuple[int, int]:
    """(column hop in samples, time columns per model input) of a frame model: (1600, 101) for AST at 16 kHz."""
    return column_hop_samples(model.config, model.frontend), model.config.grid[1]


def is_frame_model(model: Any) -> bool:
    """True for a model with a frame head (an `AST` or an ONNX graph of one)."""
    return bool(getattr(model, "has_frame_head", False))


def event_windowing(model: Any, window_s: float | None = None, hop_s: float | None = None) -> Windowing:
    """Event detection's windows (module docstring); ConfigError (one line) for values the model cannot use."""
    if not is_frame_model(model):
        default = round(WINDOW_FRACTION * model.frontend.input_samples)
        return clip_windowing(model, window_s, hop_s, default_window=default,
                              default_hop=lambda window: max(1, round(HOP_FRACTION * window)))
    column, t_dim = frame_grid(model)
    rate, input_s = model.frontend.sample_rate, model.frontend.duration_s
    window, half = t_dim * column, max(1, t_dim // 2) * column
    near = column / 2  # values within half a column mean that column count

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{what}: a frame model scores windows of its input ({input_s:g} s, {t_dim} frame columns "
                           f"of {column / rate:g} s) every {window / rate:g} s (hop = window, the default) or every "
                           f"{half / rate:g} s (50% overlap, each window's centre kept); leave out --window and give "
                           f"--hop {window / rate:g} or {half / rate:g}")

    window_s, hop_s = _as_float(window_s), _as_float(hop_s)
    if window_s is not None and not (_seconds(window_s) and min(abs(window_s * rate - window),
                                                                abs(window_s - input_s) * rate) <= near):
        raise refuse(f"window {window_s!r} s")
    if hop_s is None or (_seconds(hop_s) and abs(hop_s * rate - window) <= near):
        return Windowing(rate, window, window, column)
    if _seconds(hop_s) and abs(hop_s * rate - half) <= near:
        return Windowing(rate, window, half, column)
    raise refuse(f"hop {hop_s!r} s")


def live_windowing(model: Any, window_s: float | None = None, hop_s: float | None = None) -> Windowing:
    """A live stream's windows: a clip model's as `tag_windowing`; a frame model's are its input's t_dim columns
    (`window_s` must be left out: every pass reads the model's input) every `hop_s` from one column to the window
    (default `FRAME_LIVE_HOP_S`, or the window if shorter). ConfigError in one line otherwise."""
    if not is_frame_model(model):
        return tag_windowing(model, window_s, hop_s)
    column, t_dim = frame_grid(model)
    rate, window = model.frontend.sample_rate, column * t_dim
    if window_s is not None:
        raise ConfigError(f"window_s does not apply to a frame model: every pass scores the model's input, whose "
                          f"{t_dim} columns cover {window / rate:g} s; leave the window out and choose the hop")
    hop_s = _as_float(hop_s)
    if hop_s is None:
        return Windowing(rate, window, min(window, round(FRAME_LIVE_HOP_S * rate)), column)
    hop = round(hop_s * rate) if _seconds(hop_s) and 0 < hop_s <= window / rate + 1 else -1
    if not column <= hop <= window:
        raise ConfigError(f"hop_s for a frame model must be between one column ({column / rate:g} s) and the "
                          f"{t_dim} columns of the model's input ({window / rate:g} s), got {hop_s!r}")
    return Windowing(rate, window, hop, column)


def resolve(policy: Policy, model: Any, windowing: Windowing | None, window_s: float | None,
            hop_s: float | None) -> Windowing:
    """The windowing a call uses: the one given (built once by the caller; then no window_s / hop_s, and the model's
    rate), else `policy(model, window_s, hop_s)`, the Python API's seconds keywords."""
    if windowing is None:
        return policy(model, window_s, hop_s)
    if window_s is not None or hop_s is not None:
        raise ConfigError("give either windowing or window_s / hop_s, not both")
    if windowing.rate != model.frontend.sample_rate:
        raise ConfigError(f"the windowing is at {windowing.rate} Hz but the model runs at "
                          f"{model.frontend.sample_rate} Hz; build it from this model (ast_audio.infer.windowing)")
    return windowing
