"""PNG pictures: the explanation over the log-mel spectrogram, and the event timeline of a long recording.

matplotlib is imported inside the functions, with the Agg backend (no display needed), so importing this
module costs nothing and only commands that draw need the `plot` extra. Figures are made without pyplot (each on
its own Agg canvas), so nothing global is shared between drawings and a server may draw from several threads.
`explanation_figure` and `timeline_figure` return the Figure (the tests read its axes); `plot_*` save it as PNG.
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


def _matplotlib() -> Any:
    """matplotlib with the Agg backend; a clear error if the `plot` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("drawing needs matplotlib; install it with `pip install 'ast-audio[plot]'`") from None
    matplotlib.use("Agg", force=True)
    return matplotlib


def _figure(width_px: int, height_px: int) -> Any:
    """A Figure on its own Agg canvas, outside pyplot's global state (so threads may draw at the same time)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
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


def explanation_figure(expl: Explanation, *, width_px: int = 1200, height_px: int = 600) -> Any:
    """The log-mel spectrogram (grey) with the relevance over it (coloured, transparent where low).

    x: time in seconds from the start of the explained window's file position; left y: mel bin; right y: Hz.
    """
    fig = _figure(width_px, height_px)
    fbank = expl.fbank.numpy()  # (T, F)
    relevance = expl.relevance.numpy()  # (T, F)
    num_frames, num_bins = fbank.shape
    t0 = expl.start_s
    t1 = t0 + num_frames * expl.frame_shift_s
    ax = fig.add_subplot()
    extent = (t0, t1, 0, num_bins)
    ax.imshow(fbank.T, origin="lower", aspect="auto", extent=extent, cmap="gray_r", interpolation="nearest")
    overlay = np.ma.masked_less(relevance.T, 0.05)  # leave the least relevant cells clear
    image = ax.imshow(overlay, origin="lower", aspect="auto", extent=extent, cmap="inferno", alpha=0.55,
                      vmin=0.0, vmax=1.0, interpolation="bilinear")
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
    fig.colorbar(image, ax=ax, pad=0.08, fraction=0.04, label="relevance (min-max scaled)")
    top = ", ".join(f"{label} {score:.2f}" for label, score in expl.labels)
    what = (f"evidence for '{expl.class_name}' (gradient-weighted rollout)" if expl.class_name
            else "attention rollout (cls/dist tokens)")
    ax.set_title(f"{top}\n{what}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_explanation(expl: Explanation, out: str | os.PathLike | BinaryIO, *, width_px: int = 1200,
                     height_px: int = 600) -> None:
    """Save `explanation_figure` as a width_px x height_px PNG (atomically when `out` is a path)."""
    _save(explanation_figure(expl, width_px=width_px, height_px=height_px), out)


def timeline_figure(timeline: Timeline, events: Sequence[Event], *, top_n: int = 5, width_px: int = 1200,
                    height_px: int = 500, title: str | None = None, truth: Sequence[Event] = ()) -> Any:
    """Window scores (at the window centres) of the top_n classes by peak score, events shaded in the same colour;
    `truth` (reference events, e.g. annotations) drawn as bars above the scores, coloured like their class."""
    fig = _figure(width_px, height_px)
    colours = _matplotlib().colormaps["tab10"]
    scores = timeline.scores.numpy()  # (N, C)
    centres = timeline.centres_s.numpy()
    event_labels = {e.label for e in events}
    peak = scores.max(axis=0)
    # Classes with events first (by peak), then the others by peak.
    order = sorted(range(len(timeline.labels)),
                   key=lambda c: (timeline.labels[c] not in event_labels, -float(peak[c])))[:top_n]
    ax = fig.add_subplot()
    for k, c in enumerate(order):
        label = timeline.labels[c]
        colour = colours(k % 10)
        ax.plot(centres, scores[:, c], color=colour, lw=1.5, label=label, marker="." if len(centres) < 200 else None)
        for e in events:
            if e.label == label:
                ax.axvspan(e.onset_s, e.offset_s, color=colour, alpha=0.18, lw=0)
    shown_colours = {timeline.labels[c]: colours(k % 10) for k, c in enumerate(order)}
    for e in truth:
        ax.plot([e.onset_s, e.offset_s], [1.06, 1.06], color=shown_colours.get(e.label, "0.5"), lw=6,
                solid_capstyle="butt")
    if truth:
        ax.text(0.0, 1.09, " truth", fontsize=8, va="bottom")
    ax.set_xlim(0.0, timeline.duration_s)
    ax.set_ylim(0.0, 1.15 if truth else 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("window score")
    ax.grid(alpha=0.3)
    if order:
        ax.legend(loc="upper right", fontsize=8, ncol=min(len(order), 5))
    shown = sum(1 for e in events if e.label in {timeline.labels[c] for c in order})
    ax.set_title(title or f"window scores (window {timeline.window_s:g} s, hop {timeline.hop_s:g} s); "
                          f"{shown} event(s) shaded", fontsize=10)
    fig.tight_layout()
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
