"""Explanations (attention rollout, gradient rollout, patch -> cell mapping) and their pictures (infer.plots)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch

from ast_audio.audio.features import FeatureExtractor
from ast_audio.errors import ConfigError
from ast_audio.infer.events import EventConfig, detect_events
from ast_audio.infer.explain import (
    Explanation,
    deletion_curve,
    explain,
    gradient_rollout,
    patches_to_cells,
    pointing_chance,
    pointing_game,
    relevance_order,
    rollout,
)
from ast_audio.infer.plots import (
    explanation_figure,
    hz_to_mel_bin,
    mel_bin_to_hz,
    plot_explanation,
    plot_timeline,
    timeline_figure,
)
from ast_audio.infer.stream import Timeline
from conftest import tiny_model


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk (PNG spec §5.2, §11.2.2)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def tone(seconds: float = 1.3, freq: float = 1000.0) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000)) / 16000
    return 0.3 * torch.sin(2 * torch.pi * freq * t) + 0.01 * torch.randn(t.shape, generator=torch.Generator()
                                                                         .manual_seed(0))


def numpy_attention_maps(model, x: torch.Tensor) -> list[np.ndarray]:
    """Per-layer (H, S, S) attention probabilities softmax(q k^T / sqrt(d)), computed in numpy from each block's
    LayerNorm output (captured with hooks) and its qkv weights: independent of the model's attention code."""
    inputs: list[np.ndarray] = []
    hooks = [b.norm1.register_forward_hook(lambda m, i, o: inputs.append(o[0].detach().double().numpy()))
             for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    maps = []
    for block, h in zip(model.blocks, inputs, strict=True):
        w = block.attn.qkv.weight.detach().double().numpy()
        b = block.attn.qkv.bias.detach().double().numpy()
        qkv = h @ w.T + b  # (S, 3D)
        dim = qkv.shape[1] // 3
        heads = block.attn.num_heads
        d = dim // heads
        out = []
        for k in range(heads):
            q, key = qkv[:, k * d:(k + 1) * d], qkv[:, dim + k * d:dim + (k + 1) * d]
            logits = q @ key.T / np.sqrt(d)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True))
        maps.append(np.stack(out))
    return maps


def numpy_rollout(maps: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema (2020): Â_l = (mean_h A_l + I) with rows normalised to 1; rollout = Â_L ... Â_1."""
    result = np.eye(maps[0].shape[-1])
    for a in maps:
        a = a.mean(axis=0) + np.eye(a.shape[-1])
        a = a / a.sum(axis=1, keepdims=True)
        result = a @ result
    return result


def test_rollout_matches_numpy_definition():
    model = tiny_model(seed=3)
    features = FeatureExtractor(model.frontend)
    x = features(tone())
    ours = rollout([m[0] for m in model.attention_maps(x)]).numpy()
    reference = numpy_rollout(numpy_attention_maps(model, x))
    np.testing.assert_allclose(ours, reference, atol=1e-5)  # float32 attention vs float64 numpy: 1e-5
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-9)  # rows stay distributions

    expl = explain(model, tone(), sample_rate=16000, method="rollout")
    f_dim, t_dim = model.config.grid
    expected_patch = reference[:2, 2:].mean(axis=0).reshape(f_dim, t_dim)  # cls/dist rows -> patch grid
    np.testing.assert_allclose(expl.patch_relevance.numpy(), expected_patch, atol=1e-5)
    assert expl.method == "rollout" and expl.class_name == ""

    mean_pooled = tiny_model(seed=3, pooling="mean")  # SSAST pooling: the head reads the mean of the patch outputs
    reference = numpy_rollout(numpy_attention_maps(mean_pooled, x))
    expl = explain(mean_pooled, tone(), sample_rate=16000, method="rollout")
    np.testing.assert_allclose(expl.patch_relevance.numpy(), reference[2:, 2:].mean(axis=0).reshape(f_dim, t_dim),
                               atol=1e-5)


def test_gradient_rollout_matches_numpy_definition():
    """Chefer et al. 2021: R = I, R += mean_h((dy_c/dA ⊙ A)^+) R; gradients from autograd on a separate forward."""
    model = tiny_model(seed=4)
    x = FeatureExtractor(model.frontend)(tone())
    tokens, maps = model.forward_features(x, return_attention=True)
    logit = model.forward_head(model.pool(tokens))[0, 2]
    grads = torch.autograd.grad(logit, maps)
    a = [m[0].detach().double().numpy() for m in maps]
    g = [gr[0].double().numpy() for gr in grads]
    reference = np.eye(a[0].shape[-1])
    for am, gm in zip(a, g, strict=True):
        reference = reference + np.clip(gm * am, 0, None).mean(axis=0) @ reference
    np.testing.assert_allclose(gradient_rollout([m[0].detach() for m in maps], [gr[0] for gr in grads]).numpy(),
                               reference, atol=1e-9)
    expl = explain(model, tone(), class_name="class_2", sample_rate=16000)
    f_dim, t_dim = model.config.grid
    np.testing.assert_allclose(expl.patch_relevance.numpy(), reference[:2, 2:].mean(axis=0).reshape(f_dim, t_dim),
                               atol=1e-5)
    assert expl.method == "gradient-rollout" and expl.class_name == "class_2"
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def numpy_gradient_rollout_patch(model, x: torch.Tensor, class_index: int) -> np.ndarray:
    """Chefer et al.'s patch relevance in numpy from autograd's d(clip logit)/d(maps) on a plain forward."""
    tokens, maps = model.forward_features(x, return_attention=True)
    grads = torch.autograd.grad(model.forward_head(model.pool(tokens))[0, class_index], maps)
    reference = np.eye(maps[0].shape[-1])
    for am, gm in zip(maps, grads, strict=True):
        cam = np.clip(gm[0].double().numpy() * am[0].detach().double().numpy(), 0, None).mean(axis=0)
        reference = reference + cam @ reference
    f_dim, t_dim = model.config.grid
    return reference[:2, 2:].mean(axis=0).reshape(f_dim, t_dim)


def test_default_explains_the_top_class_with_gradient_rollout():
    """No class: gradient rollout for the class with the highest score (here made class_3 by its head bias)."""
    model = tiny_model(seed=5)
    with torch.no_grad():
        model.mlp_head[1].bias[3] = 5.0
    x = FeatureExtractor(model.frontend)(tone())
    assert int(model(x)[0].argmax()) == 3
    expl = explain(model, tone(), sample_rate=16000)
    assert expl.method == "gradient-rollout" and expl.class_name == "class_3" and expl.labels[0][0] == "class_3"
    np.testing.assert_allclose(expl.patch_relevance.numpy(), numpy_gradient_rollout_patch(model, x, 3), atol=1e-5)
    other = explain(model, tone(), sample_rate=16000, class_name="class_1")
    assert other.class_name == "class_1" and not torch.allclose(other.patch_relevance, expl.patch_relevance)


def test_frame_model_explains_its_clip_score():
    """A frame model: gradient rollout of the clip logit (the cls/dist head), frozen parameters or not."""
    from ast_audio.config import FrameHeadConfig

    model = tiny_model(seed=6, frame_head=FrameHeadConfig(hidden=16))
    x = FeatureExtractor(model.frontend)(tone())
    expected = numpy_gradient_rollout_patch(model, x, 2)
    for p in model.parameters():
        p.requires_grad_(False)  # explanations need no trainable parameters (the input carries the graph)
    expl = explain(model, tone(), sample_rate=16000, class_name="class_2")
    np.testing.assert_allclose(expl.patch_relevance.numpy(), expected, atol=1e-5)
    assert explain(model, tone(), sample_rate=16000, method="rollout").relevance.shape == (128, 128)


def test_patches_to_cells_hand_computed():
    """A 2 x 3 grid of 3 x 3 patches at stride 2 over 6 x 8 cells, by hand:
    rows 0-1 only patch row 0, row 2 both rows, rows 3-4 patch row 1, row 5 none; columns likewise with
    column pairs (0,1) (2) (3) (4) (5,6) (7): 0 alone, 0+1, 1 alone, 1+2, 2 alone, none."""
    patch = torch.tensor([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    cells = patches_to_cells(patch, (6, 8), (3, 3), (2, 2)).numpy()
    row0 = [1, 1, 1.5, 2, 3, 4, 4, 0]  # patch row 0 across the columns: means of the covering patches
    row1 = [8, 8, 12, 16, 24, 32, 32, 0]
    both = [(a + b) / 2 for a, b in zip(row0, row1, strict=True)]
    # the cell (2, 2) is covered by 4 patches: (1 + 2 + 8 + 16) / 4 = 6.75 = mean of row0/row1 means (same counts)
    expected = np.array([row0, row0, both, row1, row1, [0] * 8], dtype=np.float64)
    np.testing.assert_allclose(cells, expected, atol=1e-12)
    assert cells[2, 2] == pytest.approx(6.75)


def test_explain_shapes_and_errors():
    model = tiny_model()
    wave = tone(3.0)
    expl = explain(model, wave, top_k=2, sample_rate=16000, method="rollout")
    frames = model.frontend.target_length  # 3 s is longer than the 1.295 s input: one full input window
    assert expl.fbank.shape == (frames, 128) and expl.relevance.shape == (frames, 128)
    assert float(expl.relevance.min()) >= 0 and float(expl.relevance.max()) == pytest.approx(1.0)
    assert len(expl.labels) == 2 and expl.method == "rollout" and expl.class_name == ""
    # relevance = the cell map min-max scaled over the covered cells: 12 patches of 16 at stride 10 cover 0..125.
    cells = patches_to_cells(expl.patch_relevance, (128, 128), (16, 16), (10, 10)).T.numpy()  # (T, F)
    inside = cells[:126, :126]
    np.testing.assert_allclose(expl.relevance[:126, :126].numpy(), (inside - inside.min()) / np.ptp(inside),
                               atol=1e-6)
    assert float(expl.relevance[126:].abs().sum() + expl.relevance[:, 126:].abs().sum()) == 0.0
    torch.testing.assert_close(expl.fbank, FeatureExtractor(model.frontend).frames(wave[:model.frontend.input_samples]))
    short = explain(model, wave[:8000], sample_rate=16000)  # 0.5 s: 48 frames of audio, padded inside the model
    assert short.fbank.shape == (48, 128) and short.relevance.shape == (48, 128)
    later = explain(model, wave, start_s=1.5, sample_rate=16000)
    assert later.start_s == 1.5
    with pytest.raises(ConfigError, match="unknown class"):
        explain(model, wave, class_name="nope", sample_rate=16000)
    with pytest.raises(ConfigError, match="outside the audio"):
        explain(model, wave, start_s=10.0, sample_rate=16000)
    with pytest.raises(ConfigError, match="rollout is class-agnostic.*use method gradient-rollout"):
        explain(model, wave, class_name="class_1", method="rollout", sample_rate=16000)
    with pytest.raises(ConfigError, match="method 'lrp'; expected one of gradient-rollout, rollout"):
        explain(model, wave, method="lrp", sample_rate=16000)


# ---- the quality measures, on a model whose evidence is known by construction --------------------------------------
# The tiny config's grid: 128 x 128 cells, 16 x 16 patches at stride 10 -> 12 x 12 patches, token = f_idx * 12 + t_idx.
BOX_PATCH = 1 * 12 + 2  # f_idx 1, t_idx 2: mel bins 10..25, frames 20..35
BOX = (slice(20, 36), slice(10, 26))  # (frames, mel bins) of that patch's receptive field


class BoxModel(torch.nn.Module):
    """Scores class "box" by the mean normalised input over BOX and nothing else (logit = 4 x that mean); an AST's
    config and front end for the patch geometry."""

    def __init__(self) -> None:
        super().__init__()
        ast = tiny_model()
        self.config, self.frontend, self.labels, self.multi_label = ast.config, ast.frontend, ("box", "other"), True
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter, so the model has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, BOX[0], BOX[1]].mean(dim=(1, 2))  # (B,)
        return torch.stack([4 * v, torch.zeros_like(v)], dim=1)


def box_model(monkeypatch) -> BoxModel:
    import ast_audio.infer.explain as explain_module

    monkeypatch.setattr(explain_module, "AST", BoxModel)  # torch_ast accepts it as the model to measure
    return BoxModel()


def expected_box_scores(order: list[int], counts: list[int], loud: float, fill: float, frontend) -> np.ndarray:
    """The class score after removing order[:k] for each k in counts, by hand: patch (fi, ti) covers mel bins
    10 fi .. 10 fi + 15 and frames 10 ti .. 10 ti + 15; the box's cells are `loud`, filled ones `fill`."""
    scores = []
    for k in counts:
        box = np.full((16, 16), loud)  # frames 20..35 x mel bins 10..25
        for index in order[:k]:
            fi, ti = divmod(index, 12)
            for t in range(10 * ti, 10 * ti + 16):
                for f in range(10 * fi, 10 * fi + 16):
                    if 20 <= t < 36 and 10 <= f < 26:
                        box[t - 20, f - 10] = fill
        mean = ((box - frontend.mean) / (2 * frontend.std)).mean()
        scores.append(1 / (1 + np.exp(-4 * mean)))
    return np.array(scores)


def test_deletion_curve_on_a_model_with_known_evidence(monkeypatch):
    model = box_model(monkeypatch)
    frames = torch.zeros(128, 128)
    frames[BOX] = 2.0  # the evidence: loud cells in the box, log-mel 0 elsewhere; removed cells become 0
    relevance = torch.zeros(12, 12)
    relevance.view(-1)[BOX_PATCH] = 1.0
    order = relevance_order(relevance)
    assert int(order[0]) == BOX_PATCH and order.tolist()[1:] == [i for i in range(144) if i != BOX_PATCH]

    curve = deletion_curve(model, frames, "box", order, 0.0, steps=144)  # a point per removed patch
    full, empty = expected_box_scores([], [0], 2.0, 0.0, model.frontend)[0], 1 / (1 + np.exp(
        -4 * (0 - model.frontend.mean) / (2 * model.frontend.std)))
    expected = np.array([full] + [empty] * 144)  # the one box patch holds all the evidence
    np.testing.assert_allclose(curve.scores.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(curve.fractions.numpy(), np.arange(145) / 144, atol=1e-12)
    assert curve.auc == pytest.approx((full + empty) / 2 / 144 + empty * 143 / 144, abs=1e-6)

    generator = torch.Generator().manual_seed(0)
    randoms = []
    for _ in range(3):
        shuffled = torch.randperm(144, generator=generator)
        random_curve = deletion_curve(model, frames, "box", shuffled, 0.0, steps=12)
        counts = [round(k) for k in np.linspace(0, 144, 13)]
        np.testing.assert_allclose(random_curve.scores.numpy(),
                                   expected_box_scores(shuffled.tolist(), counts, 2.0, 0.0, model.frontend), atol=1e-6)
        randoms.append(random_curve.auc)
    assert deletion_curve(model, frames, "box", order, 0.0, steps=12).auc < min(randoms)

    per_bin = torch.full((128,), 2.0)  # a (F,) fill: removing changes nothing, the curve stays flat
    flat = deletion_curve(model, frames, "box", order, per_bin, steps=4).scores
    np.testing.assert_allclose(flat.numpy(), [full] * 5, atol=1e-6)
    with pytest.raises(ConfigError, match="permutation of the 144 patch indices"):
        deletion_curve(model, frames, "box", order[:10], 0.0)
    with pytest.raises(ConfigError, match="unknown class"):
        deletion_curve(model, frames, "dog", order, 0.0)


def test_pointing_game_by_hand():
    """The most relevant patch is BOX_PATCH (frames 20..35, mel bins 10..25): a hit when the region touches that
    field, even at its last cell, a miss one cell past it."""
    config = tiny_model().config
    relevance = torch.rand(12, 12, generator=torch.Generator().manual_seed(1))
    relevance.view(-1)[BOX_PATCH] = 2.0
    region = torch.zeros(128, 128, dtype=torch.bool)
    region[35, 25] = True
    assert pointing_game(relevance, region, config)
    region[35, 25], region[36, 25], region[35, 26] = False, True, True
    assert not pointing_game(relevance, region, config)
    short = torch.zeros(30, 128, dtype=torch.bool)  # a region of fewer frames than the input: the rest is outside
    short[25, 12] = True
    assert pointing_game(relevance, short, config)
    corner = torch.zeros(128, 128, dtype=torch.bool)
    corner[0, 0] = True  # only patch 0 covers cell (0, 0); cell (15, 15) is in 4 patches' fields
    assert pointing_chance(corner, config) == pytest.approx(1 / 144)
    corner[15, 15] = True
    assert pointing_chance(corner, config) == pytest.approx(4 / 144)


def test_explain_int8_class_is_a_clear_error_rollout_works():
    from ast_audio.model.precision import apply_precision

    model = apply_precision(tiny_model(), "int8")
    assert explain(model, tone(), sample_rate=16000, method="rollout").relevance.shape == (128, 128)
    for class_name in ("class_1", None):  # the default method needs gradients too
        with pytest.raises(ConfigError, match="int8.*or the class-agnostic method rollout"):
            explain(model, tone(), class_name=class_name, sample_rate=16000)


def test_mel_axis_conversion_matches_kaldi_bank_centres():
    """The secondary Hz axis: the bin -> Hz map puts each bin at the peak of its Kaldi filter (1 FFT bin)."""
    from ast_audio.audio.fbank import mel_banks

    banks = mel_banks(128, 512, 16000).numpy()  # (257, 128)
    peak_hz = banks.argmax(axis=0) * 16000 / 512
    used = banks.max(axis=0) > 0  # Kaldi's lowest filters can catch no FFT bin at all
    np.testing.assert_allclose(mel_bin_to_hz(np.arange(128), 128, 16000)[used], peak_hz[used], atol=16000 / 512)
    np.testing.assert_allclose(hz_to_mel_bin(mel_bin_to_hz(np.arange(128.0), 128, 16000), 128, 16000),
                               np.arange(128.0), atol=1e-9)


def test_explanation_figure_axes_and_png_size(tmp_path):
    model = tiny_model()
    expl = explain(model, tone(), top_k=2, sample_rate=16000)
    fig = explanation_figure(expl, width_px=900, height_px=450)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "mel bin"
    assert ax.get_xlim() == pytest.approx((0.0, expl.fbank.shape[0] * 0.01))
    assert ax.get_ylim() == pytest.approx((0.0, 128.0))
    assert expl.labels[0][0] in ax.get_title() and "rollout" in ax.get_title()
    secondary = [child for child in ax.get_children() if type(child).__name__ == "SecondaryAxis"]
    assert secondary and secondary[0].get_ylabel() == "frequency (Hz)"
    assert tuple(fig.get_size_inches() * fig.dpi) == pytest.approx((900, 450))
    out = tmp_path / "e.png"
    plot_explanation(expl, out, width_px=900, height_px=450)
    assert png_size(out.read_bytes()) == (900, 450)
    buffer = io.BytesIO()
    plot_explanation(expl, buffer)
    assert png_size(buffer.getvalue()) == (1200, 600)
    import matplotlib.image

    assert matplotlib.image.imread(str(out)).shape[:2] == (450, 900)  # decodes as a real image


def test_timeline_figure_axes_events_and_png(tmp_path):
    n = 40
    starts = np.arange(n) * 0.5
    scores = np.zeros((n, 3), dtype=np.float32)
    scores[10:20, 1] = 0.9
    scores[30:35, 2] = 0.8
    timeline = Timeline(starts_s=torch.tensor(starts), ends_s=torch.tensor(starts + 1.0),
                        scores=torch.tensor(scores), labels=("a", "b", "c"), duration_s=20.5, hop_s=0.5,
                        window_s=1.0)
    events = detect_events(timeline, EventConfig())
    fig = timeline_figure(timeline, events, top_n=2)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "window score"
    assert ax.get_xlim() == pytest.approx((0.0, 20.5)) and ax.get_ylim() == pytest.approx((0.0, 1.02))
    assert [line.get_label() for line in ax.get_lines()] == ["b", "c"]  # the classes with events, top_n = 2
    spans = [p for p in ax.patches if type(p).__name__ in ("Polygon", "Rectangle")]
    assert len(spans) == len(events) == 2
    out = tmp_path / "t.png"
    plot_timeline(timeline, events, out)
    assert png_size(out.read_bytes()) == (1200, 500)
    from ast_audio.infer.events import Event

    with_truth = timeline_figure(timeline, events, top_n=2, truth=[Event("b", 5.0, 10.0, 1.0)]).axes[0]
    bars = with_truth.get_lines()[2:]  # after the two score curves
    assert len(bars) == 1 and tuple(bars[0].get_xdata()) == (5.0, 10.0)
    assert bars[0].get_color() == with_truth.get_lines()[0].get_color()  # coloured like class b's curve
    assert with_truth.get_ylim() == pytest.approx((0.0, 1.15))


def test_explanation_dataclass_fields():
    expl = Explanation(fbank=torch.zeros(3, 4), relevance=torch.zeros(3, 4), labels=[], class_name="",
                       sample_rate=16000, frame_shift_s=0.01)
    assert expl.method == "rollout" and expl.start_s == 0.0


def test_drawing_from_threads_gives_the_serial_pictures():
    """Figures live outside pyplot, so concurrent drawings (a server's worker threads) do not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_model()
    expls = [explain(model, tone(freq=f), sample_rate=16000) for f in (500.0, 2000.0)]

    def draw(expl) -> bytes:
        buffer = io.BytesIO()
        plot_explanation(expl, buffer, width_px=400, height_px=200)
        return buffer.getvalue()

    serial = [draw(e) for e in expls]
    assert serial[0] != serial[1]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(draw, expls * 4))
    assert threaded == serial * 4


def test_explain_cli_method_and_class(tmp_path, capsys):
    """Through the CLI: the default says which class it explained (the top one); --method rollout says
    class-agnostic and refuses --class in one line, before decoding the audio; a bad method is a usage error."""
    from ast_audio.weights.checkpoint import save_model
    from conftest import run_main, write_tone

    model = tiny_model(seed=5)
    with torch.no_grad():
        model.mlp_head[1].bias[3] = 5.0  # class_3 on top whatever the audio
    ckpt = save_model(model, tmp_path / "ckpt")
    wav = write_tone(tmp_path / "tone.wav", seconds=1.5)
    out = tmp_path / "e.png"
    rc, _, err = run_main(capsys, "explain", wav, "-o", out, "--checkpoint", ckpt, "--precision", "fp32")
    assert rc == 0 and "(gradient-rollout for class_3; top: class_3" in err and png_size(out.read_bytes())
    rc, _, err = run_main(capsys, "explain", wav, "-o", out, "--force", "--checkpoint", ckpt, "--precision", "fp32",
                          "--class", "class_1")
    assert rc == 0 and "(gradient-rollout for class_1; top: class_3" in err
    rc, _, err = run_main(capsys, "explain", wav, "-o", out, "--force", "--checkpoint", ckpt, "--method", "rollout")
    assert rc == 0 and "(rollout, class-agnostic; top: class_3" in err
    rc, _, err = run_main(capsys, "explain", tmp_path / "missing.wav", "-o", tmp_path / "x.png", "--checkpoint", ckpt,
                          "--method", "rollout", "--class", "class_1")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "rollout is class-agnostic" in err
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()
    rc, _, err = run_main(capsys, "explain", wav, "-o", tmp_path / "x.png", "--checkpoint", ckpt, "--method", "lrp")
    assert rc == 2 and "invalid choice: 'lrp'" in err and "gradient-rollout" in err


def test_cli_method_choices_are_the_library_names():
    """The CLI offers the library's tuple itself (imported from the torch-free module), not a copy."""
    from ast_audio.cli import events as cli_events
    from ast_audio.infer import explain as lib_explain
    from ast_audio.infer import explain_methods

    assert cli_events.EXPLAIN_METHODS is explain_methods.METHODS is lib_explain.METHODS
    assert explain_methods.DEFAULT_METHOD == "gradient-rollout"


@pytest.mark.slow
def test_gradient_rollout_points_at_known_sounds_on_the_demo_model(demo_run):
    """On the demo model, 12 clips whose sound fills a known part of the spectrogram (`ast_audio.bench.explain`):
    gradient rollout (the default) wins the pointing game at least as often as rollout and far above a random
    patch, and deleting patches in its order drops the top class's score faster than random orders do."""
    from ast_audio.bench.explain import run_bench
    from ast_audio.weights.checkpoint import load_model

    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    bench = run_bench(load_model(out / "model"), clips_per_class=3, random_orders=5, seed=0)
    n = len(bench.clips)
    assert n == 12 and bench.correct >= 11  # the demo model names (nearly) every clip's sound
    hits, auc = bench.hits, bench.mean_auc
    assert hits["gradient-rollout"] >= hits["rollout"]
    assert hits["gradient-rollout"] >= 2 * bench.mean_chance * n  # twice a random patch's hit rate at least
    assert auc["gradient-rollout"] < bench.mean_random_auc
