"""PNG pictures: the explanation over the log-mel spectrogram, and the event timeline of a long recording.

matplotlib is imported inside the functions, with the Agg backend (no display needed), so importing this
module costs nothing and only commands that draw need the `plot` extra. Figures are made without pyplot (each on
its own Agg canvas), so nothing global is shared between drawings and a server may draw from several threads.
`explanation_figure` and `timeline_figure` return the Figure (the tests read its axes); `plot_*` save it as PNG.

A class has one colour everywhere (every file's timeline, every run, the server's page): `class_colour`, picked by
the class's index in the model's label order, so it does not depend on which classes a recording happens to hold.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from .events import Event
    from .explain import Explanation
    from .stream import Timeline

DPI = 100

# matplotlib's "tab10" qualitative palette (hex, so the server can send it without importing matplotlib).
CLASS_PALETTE: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                  "#7f7f7f", "#bcbd22", "#17becf")
# Past the palette's 10 colours the line style tells classes apart in the PNG: index 10-19 dashed, 20-29 dotted...
_LINE_STYLES = ("-", "--", ":", "-.")
UNKNOWN_CLASS_COLOUR = "#000000"  # a reference event whose label the model does not have


def class_colour(index: int) -> str:
    """The colour of the class at `index` in the model's label order (hex "#rrggbb"), the same in every picture."""
    return CLASS_PALETTE[index % len(CLASS_PALETTE)]


def _class_line_style(index: int) -> str:
    return _LINE_STYLES[index // len(CLASS_PALETTE) % len(_LINE_STYLES)]


def _matplotlib() -> Any:
    """matplotlib with the Agg backend; a clear error if the `plot` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("drawing needs matplotlib; install it with `pip install 'ast-audio[plot]'`") from None
    matplotlib.use("Agg", force=True)
    return matplotlib


def _figure(width_px: int, height_px: int, layout: str | None = None) -> Any:
    """A Figure on its own Agg canvas, outside pyplot's global state (so threads may draw at the same time)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def mel_bin_to_hz(bins: np.ndarray | float, num_bins: int, sample_rate: int, low_freq: float = 20.0) -> np.ndarray:
    """Centre frequency (Hz) of Kaldi mel bin `bins` (fractional allowed) of `num_bins` from low_freq to Nyquist."""
    mel_low, mel_high = 1127.0 * math.log1p(low_freq / 700.0), 1127.0 * math.log1p(sample_rate / 2 / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    mel = mel_low + (np.asarray(bins, dtype=np.float64) + 1) * delta
    return 700.0 * np.expm1(mel / 1127.0)


def hz_to_mel_bin(hz: np.ndarray | float, num_bins: int, sample_rate: int, low_freq: float = 20.0) -> np.ndarray:
    """Inverse of `mel_bin_to_hz`."""
    mel_low, mel_high = 1127.0 * math.log1p(low_freq / 700.0), 1127.0 * math.log1p(sample_rate / 2 / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    mel = 1127.0 * np.log1p(np.maximum(np.asarray(hz, dtype=np.float64), 0.0) / 700.0)
    return (mel - mel_low) / delta - 1


def _save(fig: Any, out: str | os.PathLike | BinaryIO) -> None:
    if isinstance(out, (str, os.PathLike)):
        from ..utils import atomic_path

        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    else:
        fig.savefig(out, format="png", dpi=DPI)


# Relevance contours drawn over the spectrogram: cyan (far from magma's hues), thicker where more relevant.
# The lowest level shows the secondary evidence: one patch often holds the maximum and the next ones about 0.1-0.2.
RELEVANCE_LEVELS = (0.1, 0.25, 0.5, 0.75)
_RELEVANCE_COLOURS = ("#d8faff", "#8beeff", "#3fd8ff", "#00a8d8")
_RELEVANCE_WIDTHS = (0.8, 1.4, 2.0, 2.6)


def explanation_figure(expl: Explanation, *, width_px: int = 1200, height_px: int = 600) -> Any:
    """The log-mel spectrogram (magma: loud = bright) with the relevance over it as contour lines.

    x: time in seconds from the start of the explained window's file position; left y: mel bin (low frequencies at
    the bottom); right y: Hz. A colour bar for the log-mel energy, a legend for the relevance contours.
    """
    fig = _figure(width_px, height_px, layout="constrained")
    fbank = expl.fbank.numpy()  # (T, F)
    relevance = expl.relevance.numpy()  # (T, F)
    num_frames, num_bins = fbank.shape
    t0 = expl.start_s
    t1 = t0 + num_frames * expl.frame_shift_s
    ax = fig.add_subplot()
    spectrogram = ax.imshow(fbank.T, origin="lower", aspect="auto", extent=(t0, t1, 0, num_bins), cmap="magma",
                            interpolation="nearest")
    _relevance_contours(fig, ax, relevance, t0, expl.frame_shift_s)
    ax.set_xlim(t0, t1)
    ax.set_ylim(0, num_bins)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    rate = expl.sample_rate
    hz = ax.secondary_yaxis("right", functions=(lambda b: mel_bin_to_hz(b, num_bins, rate),
                                                lambda f: hz_to_mel_bin(f, num_bins, rate)))
    ticks = [f for f in (100, 250, 500, 1000, 2000, 4000, 8000, 16000) if f < rate / 2]
    hz.set_yticks(ticks)
    hz.set_ylabel("frequency (Hz)")
    fig.colorbar(spectrogram, ax=ax, pad=0.02, fraction=0.04, label="log-mel energy")
    top = ", ".join(f"{label} {score:.2f}" for label, score in expl.labels)
    what = (f"evidence for '{expl.class_name}' (gradient-weighted rollout)" if expl.class_name
            else "attention rollout (cls/dist tokens)")
    ax.set_title(f"{top}\n{what}", fontsize=10)
    return fig


def _relevance_contours(fig: Any, ax: Any, relevance: np.ndarray, t0: float, frame_shift_s: float) -> None:
    """Contour lines of the (T, F) relevance at RELEVANCE_LEVELS (through the cell centres), outlined in black so
    they stand out on dark and bright cells alike, and a legend of the levels right of the plot."""
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import Normal, Stroke

    num_frames, num_bins = relevance.shape
    times = t0 + (np.arange(num_frames) + 0.5) * frame_shift_s
    keys = []
    for level, colour, width in zip(RELEVANCE_LEVELS, _RELEVANCE_COLOURS, _RELEVANCE_WIDTHS, strict=True):
        outline = [Stroke(linewidth=width + 1.5, foreground="black"), Normal()]
        if num_frames > 1 and relevance.min() < level < relevance.max():  # contour needs data on both sides
            ax.contour(times, np.arange(num_bins) + 0.5, relevance.T, levels=[level], colors=[colour],
                       linewidths=[width]).set_path_effects(outline)
        keys.append(Line2D([], [], color=colour, lw=width, path_effects=outline, label=f"{level:.2f}"))
    fig.legend(handles=keys, loc="outside right upper", fontsize=8, title="relevance\n(min-max\nscaled)",
               title_fontsize=8)


def plot_explanation(expl: Explanation, out: str | os.PathLike | BinaryIO, *, width_px: int = 1200,
                     height_px: int = 600) -> None:
    """Save `explanation_figure` as a width_px x height_px PNG (atomically when `out` is a path)."""
    _save(explanation_figure(expl, width_px=width_px, height_px=height_px), out)


def timeline_figure(timeline: Timeline, events: Sequence[Event], *, top_n: int = 5, width_px: int = 1200,
                    height_px: int = 500, title: str | None = None, truth: Sequence[Event] = ()) -> Any:
    """Window scores (at the window centres) of the top_n classes by peak score, events shaded in the same colour;
    `truth` (reference events, e.g. annotations) drawn as bars above the scores, coloured like their class.

    Each class is drawn in `class_colour` of its index in `timeline.labels`; the legend sits right of the plot."""
    fig = _figure(width_px, height_px, layout="constrained")
    scores = timeline.scores.numpy()  # (N, C)
    centres = timeline.centres_s.numpy()
    event_labels = {e.label for e in events}
    peak = scores.max(axis=0)
    # Classes with events first (by peak), then the others by peak.
    order = sorted(range(len(timeline.labels)),
                   key=lambda c: (timeline.labels[c] not in event_labels, -float(peak[c])))[:top_n]
    ax = fig.add_subplot()
    for c in order:
        label = timeline.labels[c]
        ax.plot(centres, scores[:, c], color=class_colour(c), ls=_class_line_style(c), lw=1.5, label=label,
                marker="." if len(centres) < 200 else None)
        for e in events:
            if e.label == label:
                ax.axvspan(e.onset_s, e.offset_s, color=class_colour(c), alpha=0.18, lw=0)
    index = {label: c for c, label in enumerate(timeline.labels)}
    for e in truth:
        colour = class_colour(index[e.label]) if e.label in index else UNKNOWN_CLASS_COLOUR
        ax.plot([e.onset_s, e.offset_s], [1.06, 1.06], color=colour, lw=6, solid_capstyle="butt")
    if truth:
        ax.text(0.0, 1.09, " truth", fontsize=8, va="bottom")
    ax.set_xlim(0.0, timeline.duration_s)
    ax.set_ylim(0.0, 1.15 if truth else 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("window score")
    ax.grid(alpha=0.3)
    if order:  # outside the axes, so it covers neither curves nor truth bars
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    shown = sum(1 for e in events if e.label in {timeline.labels[c] for c in order})
    ax.set_title(title or f"window scores (window {timeline.window_s:g} s, hop {timeline.hop_s:g} s); "
                          f"{shown} event(s) shaded", fontsize=10)
    return fig


def plot_timeline(timeline: Timeline, events: Sequence[Event], out: str | os.PathLike | BinaryIO, *,
                  top_n: int = 5, width_px: int = 1200, height_px: int = 500, title: str | None = None,
                  truth: Sequence[Event] = ()) -> None:
    """Save `timeline_figure` as a PNG (atomically when `out` is a path)."""
    _save(timeline_figure(timeline, events, top_n=top_n, width_px=width_px, height_px=height_px, title=title,
                          truth=truth), out)


def psd_roc_figure(rocs: dict[str, dict[str, list[float]]], values: dict[str, float | None], *, max_efpr: float = 100.0,
                   width_px: int = 800, height_px: int = 500, title: str | None = None) -> Any:
    """PSD-ROC curves (effective TPR over effective FPR per hour, a staircase as PSDS integrates it), one per
    parameter set in `rocs` ({"psds1": {"efpr": [...], "etpr": [...]}}), the PSDS values in the legend."""
    fig = _figure(width_px, height_px)
    ax = fig.add_subplot()
    for name, roc in rocs.items():
        value = values.get(name)
        shown = f"{name.upper()} = {value:.3f}" if value is not None else name.upper()
        ax.step(roc["efpr"], roc["etpr"], where="post", lw=1.8, label=shown)
    ax.set_xlim(0.0, max_efpr)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("effective false positive rate (per hour)")
    ax.set_ylabel("effective true positive rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_psd_roc(rocs: dict[str, dict[str, list[float]]], values: dict[str, float | None],
                 out: str | os.PathLike | BinaryIO, **kwargs: Any) -> None:
    """Save `psd_roc_figure` as a PNG (atomically when `out` is a path)."""
    _save(psd_roc_figure(rocs, values, **kwargs), out)
