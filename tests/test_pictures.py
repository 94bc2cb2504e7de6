"""The pictures a person reads: one colour per class in every timeline (PNG, the server's page), the timeline's legend
outside the plot, the explanation's spectrogram the usual way up with loud = bright and the relevance drawn over it.

Expected colours are matplotlib's own "tab10" palette indexed by the class's position in the model's label order
(read from matplotlib, not from our palette), and every colour is read back from the figure the code draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ast_audio.infer.events import Event, EventConfig, detect_events
from ast_audio.infer.explain import Explanation
from ast_audio.infer.formats import timeline_view
from ast_audio.infer.plots import explanation_figure, timeline_figure
from ast_audio.infer.stream import Timeline
from conftest import run_main, tiny_model, write_tone

MODEL_LABELS = ("alarm", "bird", "chirp", "dog")


def tab10(index: int) -> str:
    """The expected colour of class `index`: matplotlib's tab10 palette, wrapped around."""
    import matplotlib
    from matplotlib.colors import to_hex

    return to_hex(matplotlib.colormaps["tab10"](index % 10))


def hex_of(colour) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour)


def luminance(rgb) -> float:
    """Relative luminance (ITU-R BT.709 weights) of an RGB(A) colour with channels in [0, 1]."""
    r, g, b = np.asarray(rgb, dtype=np.float64)[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def make_timeline(bursts: dict[str, tuple[int, int, float]], n: int = 40) -> Timeline:
    """Windows of 1 s every 0.5 s over MODEL_LABELS; each burst (first window, end window, score) of a class."""
    starts = np.arange(n) * 0.5
    scores = np.full((n, len(MODEL_LABELS)), 0.02, dtype=np.float32)
    for label, (a, b, score) in bursts.items():
        scores[a:b, MODEL_LABELS.index(label)] = score
    return Timeline(starts_s=torch.tensor(starts), ends_s=torch.tensor(starts + 1.0), scores=torch.tensor(scores),
                    labels=MODEL_LABELS, duration_s=20.5, hop_s=0.5, window_s=1.0)


def curve_colours(fig) -> dict[str, str]:
    """{class label: colour} of the score curves (the lines the legend names)."""
    ax = fig.axes[0]
    return {line.get_label(): hex_of(line.get_color()) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def truth_bar_colours(fig) -> list[tuple[tuple[float, float], str]]:
    """[((onset, offset), colour)] of the truth bars (the thick lines without a legend label)."""
    ax = fig.axes[0]
    return [(tuple(line.get_xdata()), hex_of(line.get_color())) for line in ax.get_lines()
            if line.get_label().startswith("_") and line.get_linewidth() >= 5]


# Two files with different classes present: "chirp" is the loudest class in the first and the second loudest in the
# second (where "alarm" leads), so a colour picked by drawing order would differ between them.
FIRST = {"chirp": (4, 12, 0.95), "dog": (20, 26, 0.7)}
SECOND = {"alarm": (2, 10, 0.97), "chirp": (24, 30, 0.8)}


def test_a_class_has_one_colour_in_every_file():
    figures = []
    for bursts in (FIRST, SECOND):
        timeline = make_timeline(bursts)
        events = detect_events(timeline, EventConfig())
        assert {e.label for e in events} == set(bursts)
        figures.append((timeline_figure(timeline, events, top_n=3), events))
    for fig, events in figures:
        colours = curve_colours(fig)
        assert len(colours) == 3
        for label, colour in colours.items():  # the curve of each class in tab10[its index in the label order]
            assert colour == tab10(MODEL_LABELS.index(label)), label
        spans = [p for p in fig.axes[0].patches if type(p).__name__ in ("Polygon", "Rectangle")]
        assert len(spans) == len(events)
        for span, event in zip(spans, events, strict=True):  # events shaded in their class's colour
            assert hex_of(span.get_facecolor()) == tab10(MODEL_LABELS.index(event.label))
    first, second = (curve_colours(fig) for fig, _ in figures)
    assert first["chirp"] == second["chirp"]
    assert len(set(first.values())) == len(first) and len(set(second.values())) == len(second)


def test_truth_bars_take_the_class_colour_even_when_its_curve_is_not_drawn():
    timeline = make_timeline(FIRST)
    events = detect_events(timeline, EventConfig())
    truth = [Event("chirp", 2.0, 6.0, 1.0), Event("bird", 8.0, 9.0, 1.0), Event("not-a-class", 10.0, 11.0, 1.0)]
    fig = timeline_figure(timeline, events, top_n=1, truth=truth)  # only chirp's curve is drawn
    assert list(curve_colours(fig)) == ["chirp"]
    bars = dict(truth_bar_colours(fig))
    assert bars[(2.0, 6.0)] == tab10(MODEL_LABELS.index("chirp"))
    assert bars[(8.0, 9.0)] == tab10(MODEL_LABELS.index("bird"))
    assert bars[(10.0, 11.0)] not in {tab10(i) for i in range(10)}  # a label the model lacks: none of the classes'


def test_many_classes_stay_apart_past_the_palette():
    """Class 0 and class 10 share tab10's first colour; the line style tells them apart in the PNG."""
    labels = tuple(f"class_{i}" for i in range(12))
    scores = np.zeros((10, 12), dtype=np.float32)
    scores[:, 0], scores[:, 10] = 0.9, 0.8
    starts = np.arange(10.0)
    timeline = Timeline(starts_s=torch.tensor(starts), ends_s=torch.tensor(starts + 1), scores=torch.tensor(scores),
                        labels=labels, duration_s=11.0, hop_s=1.0, window_s=1.0)
    lines = {line.get_label(): line for line in timeline_figure(timeline, [], top_n=2).axes[0].get_lines()}
    assert hex_of(lines["class_0"].get_color()) == hex_of(lines["class_10"].get_color()) == tab10(0)
    assert lines["class_0"].get_linestyle() != lines["class_10"].get_linestyle()


@pytest.mark.parametrize("truth", [(), (Event("bird", 1.0, 3.0, 1.0),)])
def test_timeline_legend_is_outside_the_data_area(truth):
    labels = ("a rather long class name", "another long class name", "tone", "chirp", "noise burst")
    scores = np.linspace(0.1, 0.9, 50 * 5, dtype=np.float32).reshape(50, 5)  # curves up to the top right corner
    starts = np.arange(50) * 0.5
    timeline = Timeline(starts_s=torch.tensor(starts), ends_s=torch.tensor(starts + 1), scores=torch.tensor(scores),
                        labels=labels, duration_s=25.5, hop_s=0.5, window_s=1.0)
    fig = timeline_figure(timeline, [], top_n=5, truth=list(truth))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
    assert len(legends) == 1
    legend = legends[0].get_window_extent(renderer)
    data_area = ax.get_window_extent(renderer)  # the axes' patch: where curves and truth bars are drawn
    assert not legend.overlaps(data_area), (legend, data_area)
    whole = fig.bbox  # and the legend is inside the picture, not cut off
    assert whole.x0 <= legend.x0 and legend.x1 <= whole.x1 and whole.y0 <= legend.y0 and legend.y1 <= whole.y1
    assert [t.get_text() for t in legends[0].get_texts()] == list(reversed(labels))  # best peak first


def test_events_cli_draws_each_class_in_its_own_colour_in_every_file(tmp_path, capsys, monkeypatch):
    """Through `ast-audio events --plot --plot-truth` on two files: every curve and truth bar of every picture is
    drawn in tab10[the class's index in the model's label order]."""
    from ast_audio.infer import plots
    from ast_audio.weights.checkpoint import save_model

    model = tiny_model(seed=5, num_classes=4)
    model.labels = MODEL_LABELS
    save_model(model, tmp_path / "ckpt")
    write_tone(tmp_path / "low.wav", seconds=3.0, freq=300.0)
    write_tone(tmp_path / "high.wav", seconds=3.0, freq=3000.0)
    truth = tmp_path / "strong.tsv"  # the same two reference events in each file's picture
    truth.write_text("filename\tonset\toffset\tevent_label\n" + "".join(
        f"{name}\t0.5\t1.0\tdog\n{name}\t1.5\t2.5\tbird\n" for name in ("low.wav", "high.wav")))
    drawn = []
    draw = plots.timeline_figure
    monkeypatch.setattr(plots, "timeline_figure", lambda *a, **k: drawn.append(draw(*a, **k)) or drawn[-1])
    rc, _, err = run_main(capsys, "events", tmp_path / "low.wav", tmp_path / "high.wav", "--checkpoint",
                          tmp_path / "ckpt", "--window", "1.0", "--hop", "0.25", "--plot", tmp_path / "t.png",
                          "--top-k", "2", "--plot-truth", truth, "--no-progress", "-o", tmp_path / "e.json")
    assert rc == 0, err
    assert (tmp_path / "t-low.png").exists() and (tmp_path / "t-high.png").exists()
    assert len(drawn) == 2
    for fig in drawn:
        colours = curve_colours(fig)
        assert len(colours) == 2
        assert all(colour == tab10(MODEL_LABELS.index(label)) for label, colour in colours.items()), colours
        assert dict(truth_bar_colours(fig)) == {(0.5, 1.0): tab10(MODEL_LABELS.index("dog")),
                                                (1.5, 2.5): tab10(MODEL_LABELS.index("bird"))}


def test_server_timeline_colours_are_the_png_colours():
    """The page draws what the server's timeline view says: the same colour as the PNG, in both files."""
    for bursts in (FIRST, SECOND):
        timeline = make_timeline(bursts)
        events = detect_events(timeline, EventConfig())
        view = timeline_view(timeline, events, top_n=3, threshold=0.5)
        png = curve_colours(timeline_figure(timeline, events, top_n=3))
        sent = {c["label"]: c["colour"] for c in view["classes"]}
        assert sent and all(colour == tab10(MODEL_LABELS.index(label)) for label, colour in sent.items())
        assert {label: png[label] for label in sent if label in png} == {label: sent[label] for label in png}
    json.dumps(view)  # JSON-ready


# ---- the explanation picture ----------------------------------------------------------------------------------------

FRAMES, BINS = 100, 128
QUIET, LOUD = -15.0, 3.0
RELEVANT = (slice(40, 60), slice(60, 80))  # (frames, bins) where the relevance is 1; 0 elsewhere


def synthetic_explanation() -> Explanation:
    """Loud low bins (0-19) under a quiet rest; relevance 1 in one block away from both probed cells."""
    fbank = torch.full((FRAMES, BINS), QUIET)
    fbank[:, :20] = LOUD
    relevance = torch.zeros(FRAMES, BINS)
    relevance[RELEVANT] = 1.0
    return Explanation(fbank=fbank, relevance=relevance, labels=[("chirp", 0.9)], class_name="chirp",
                       sample_rate=16000, frame_shift_s=0.01, method="gradient-rollout")


def rendered_pixel(fig, ax, t: float, mel_bin: float) -> np.ndarray:
    """RGB in [0, 1] of the rendered figure at data point (t, mel_bin)."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4), row 0 at the top
    x, y = ax.transData.transform((t, mel_bin))  # display coordinates: y from the bottom
    return image[image.shape[0] - 1 - int(round(y)), int(round(x)), :3] / 255.0


def test_explanation_spectrogram_low_bins_at_the_bottom_and_loud_is_bright():
    fig = explanation_figure(synthetic_explanation(), width_px=800, height_px=400)
    ax = fig.axes[0]
    spectrogram = ax.images[0]
    assert spectrogram.origin == "lower"
    loud, quiet = spectrogram.cmap(spectrogram.norm(LOUD)), spectrogram.cmap(spectrogram.norm(QUIET))
    assert luminance(loud) > luminance(quiet) + 0.5  # the colour map: loud = bright
    # The rendered picture: the loud low bins are the bright band at the bottom, the quiet high bins dark on top.
    bottom, top = rendered_pixel(fig, ax, 0.1, 10.0), rendered_pixel(fig, ax, 0.1, 110.0)
    assert luminance(bottom) > luminance(top) + 0.5, (bottom, top)
    assert ax.get_ylim() == pytest.approx((0.0, BINS)) and ax.get_xlim() == pytest.approx((0.0, FRAMES * 0.01))


def test_explanation_relevance_is_drawn_over_the_spectrogram():
    from matplotlib.contour import ContourSet

    expl = synthetic_explanation()
    fig = explanation_figure(expl, width_px=800, height_px=400)
    ax = fig.axes[0]
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert contours, "no relevance contours over the spectrogram"
    vertices = np.concatenate([p.vertices for c in contours for p in c.get_paths() if len(p.vertices)])
    frames, bins = RELEVANT  # the contours surround the relevant block (time in s, bins), within a cell
    assert vertices[:, 0].min() >= frames.start * 0.01 - 0.01 and vertices[:, 0].max() <= frames.stop * 0.01 + 0.01
    assert vertices[:, 1].min() >= bins.start - 1 and vertices[:, 1].max() <= bins.stop + 1
    assert vertices[:, 0].max() - vertices[:, 0].min() > 0.15 and vertices[:, 1].max() - vertices[:, 1].min() > 15
    # The overlay changes the picture where the relevance is, and only there.
    plain = explanation_figure(Explanation(**{**expl.__dict__, "relevance": torch.zeros(FRAMES, BINS)}),
                               width_px=800, height_px=400)
    assert not [c for c in plain.axes[0].collections if isinstance(c, ContourSet)]
    edge = (frames.start * 0.01 + 0.005, (bins.start + bins.stop) / 2)  # on the block's left edge
    assert not np.allclose(rendered_pixel(fig, ax, *edge), rendered_pixel(plain, plain.axes[0], *edge), atol=0.05)
    away = (0.1, 100.0)
    np.testing.assert_allclose(rendered_pixel(fig, ax, *away), rendered_pixel(plain, plain.axes[0], *away), atol=0.02)
    # It is labelled: a legend names the relevance levels.
    texts = [t.get_text() for legend in fig.legends for t in [legend.get_title(), *legend.get_texts()]]
    assert any("relevance" in t for t in texts), texts
