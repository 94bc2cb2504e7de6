"""Frame models (issue 20): the frame head's shapes and maths, weak pooling, the frame timeline and stitching over
long audio, and the frame model through checkpoints, adaptation, ONNX, precisions, `convert` and `embed`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ast_audio import AST, FrontendConfig
from ast_audio.config import ASTConfig, FrameHeadConfig, column_span
from ast_audio.errors import CheckpointError, ConfigError
from ast_audio.infer.frames import score_frames
from ast_audio.weights.checkpoint import load_model, save_hf, save_model

from .conftest import run_main, tiny_config, write_tone

HEADS = [FrameHeadConfig(freq_pool="mean", temporal="none"),
         FrameHeadConfig(freq_pool="mean", temporal="bigru", hidden=16, temporal_layers=2),
         FrameHeadConfig(freq_pool="attention", temporal="transformer", hidden=16, temporal_heads=2),
         FrameHeadConfig(freq_pool="attention", temporal="bigru", hidden=8, weak_pool="attention")]
ONNX_ATOL = 1e-4  # fp32 graph vs eager: float32 rounding (measured ~1e-7 on these tiny models)


def frame_model(head: FrameHeadConfig | None = None, seed: int = 0, **changes) -> AST:
    torch.manual_seed(seed)
    config = tiny_config(frame_head=head or FrameHeadConfig(hidden=16), **changes)
    frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
    return AST(config, frontend=frontend, labels=[f"c{i}" for i in range(config.num_classes)]).eval()


# ----------------------------------------------------------------------------------------------------------------
# The head


@pytest.mark.parametrize("head", HEADS, ids=lambda h: f"{h.freq_pool}-{h.temporal}-{h.weak_pool}")
@pytest.mark.parametrize("input_tdim,input_fdim,tstride,fstride", [(128, 128, 10, 10), (100, 64, 8, 12),
                                                                    (48, 32, 16, 16)])
def test_frame_logits_shape_follows_the_time_grid(head, input_tdim, input_fdim, tstride, fstride):
    model = frame_model(head, input_tdim=input_tdim, input_fdim=input_fdim, tstride=tstride, fstride=fstride)
    t_dim = (input_tdim - 16) // tstride + 1  # the conv's output length, counted here by hand
    clip, frames = model.forward_both(torch.randn(3, input_tdim, input_fdim))
    assert clip.shape == (3, 5) and frames.shape == (3, t_dim, 5)
    assert sum(p.numel() for p in model.parameters()) == model.config.num_parameters


def test_mean_pool_without_temporal_model_is_layernorm_linear_of_column_means():
    model = frame_model(FrameHeadConfig(freq_pool="mean", temporal="none"))
    x = torch.randn(2, 128, 128)
    f_dim, t_dim = 12, 12  # (128 - 16) // 10 + 1 per axis
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, 2 + f_dim * t_dim, D)
        head = model.frame_head
        expected = torch.zeros(2, t_dim, 5)
        for j in range(t_dim):
            rows = [2 + f * t_dim + j for f in range(f_dim)]  # column j's tokens in PatchEmbed's order
            column = tokens[:, rows].mean(dim=1)  # (B, D)
            normed = torch.nn.functional.layer_norm(column, (32,), head.norm.weight, head.norm.bias, 1e-5)
            expected[:, j] = normed @ head.classifier.weight.T + head.classifier.bias
        torch.testing.assert_close(model.forward_frames(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: f"{h.freq_pool}-{h.temporal}")
def test_one_pass_equals_the_two_separate_calls(head):
    model = frame_model(head)
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        clip, frames = model.forward_both(x)
        torch.testing.assert_close(clip, model(x), atol=0, rtol=0)
        torch.testing.assert_close(frames, model.forward_frames(x), atol=0, rtol=0)


def test_clip_model_refuses_frame_calls_in_one_line():
    model = frame_model()
    clip = AST(tiny_config()).eval()
    with pytest.raises(ConfigError, match="clip model") as info:
        clip.forward_frames(torch.randn(1, 128, 128))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="clip model"):
        score_frames(clip, torch.zeros(16000))
    assert model.has_frame_head and not clip.has_frame_head


def test_weak_pooling_linear_softmax_and_attention():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, -3.0], [1.0, 0.5]]])  # (B=1, t=3, C=2)
    p = torch.sigmoid(logits)[0]
    linear = frame_model(FrameHeadConfig(weak_pool="linear_softmax", hidden=16), num_classes=2)
    expected = torch.stack([(p[:, c] ** 2).sum() / p[:, c].sum() for c in range(2)])
    torch.testing.assert_close(linear.weak_probabilities(logits)[0], expected)

    attention = frame_model(FrameHeadConfig(weak_pool="attention", hidden=16), num_classes=2)
    torch.testing.assert_close(attention.weak_probabilities(logits)[0], p.mean(dim=0))  # zero init: uniform weights
    with torch.no_grad():
        attention.frame_head.weak_attention.weight.copy_(torch.eye(2) * 2.0)
    weights = torch.softmax(2.0 * logits[0], dim=0)  # per class over time
    torch.testing.assert_close(attention.weak_probabilities(logits)[0], (weights * p).sum(dim=0))


# ----------------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("changes,match", [
    (dict(freq_pool="max"), "freq_pool"),
    (dict(temporal="lstm"), "temporal"),
    (dict(temporal="bigru", hidden=15), "even"),
    (dict(temporal="transformer", hidden=30, temporal_heads=4), "divisible"),
    (dict(temporal_layers=0), "temporal_layers"),
    (dict(hidden=True), "hidden"),
    (dict(weak_pool="max"), "weak_pool"),
])
def test_bad_frame_head_configs_give_one_line(changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        FrameHeadConfig(**changes)
    assert "\n" not in str(info.value)


def test_frame_head_config_round_trips_and_clip_configs_read_as_before():
    config = tiny_config(frame_head=FrameHeadConfig(freq_pool="attention", temporal="transformer", hidden=32))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["frame_head"]["temporal"] == "transformer"
    assert ASTConfig.from_dict(data) == config
    clip = tiny_config()
    assert "frame_head" not in clip.to_dict()  # a clip model's config.json is unchanged by the field
    assert ASTConfig.from_dict({**clip.to_dict(), "frame_head": None}) == clip
    with pytest.raises(ConfigError, match="frame_head must be None"):
        tiny_config(frame_head={"temporal": "none"})
    with pytest.raises(ConfigError, match="unknown FrameHeadConfig"):
        ASTConfig.from_dict({**clip.to_dict(), "frame_head": {"layers": 2}})


def test_column_span_is_the_tstride_frames_from_the_column_start():
    config, frontend = ASTConfig(), FrontendConfig()  # AST: tstride 10, 10 ms hop at 16 kHz
    assert column_span(config, frontend, 0) == (0.0, 0.1)
    start, end = column_span(config, frontend, 37)
    assert math.isclose(start, 3.7) and math.isclose(end, 3.8)
    # 22.05 kHz: the Kaldi hop is int(220.5) = 220 samples, so a column is 2200 samples, not 0.1 s
    odd = FrontendConfig(sample_rate=22050)
    assert column_span(config, odd, 1) == (2200 / 22050, 4400 / 22050)


# ----------------------------------------------------------------------------------------------------------------
# Stitching over long audio


def brute_force_frames(model: AST, waveform: torch.Tensor, overlap: bool) -> torch.Tensor:
    """Each grid column's score from the window that owns it, one window per column: a reference written apart
    from `score_frames`."""
    from ast_audio.audio.features import FeatureExtractor

    t_dim, column, full = 12, 1600, model.frontend.input_samples  # tiny model: 12 time columns of 10 x 160 samples
    hop = t_dim // 2 if overlap else t_dim
    margin = (t_dim - hop) // 2  # the columns of each window's edges given to its neighbours
    n = waveform.shape[0]
    columns = math.ceil(n / column)
    last = next(w for w in range(columns) if w * hop + t_dim >= columns)  # the first window reaching the end
    extractor = FeatureExtractor(model.frontend)
    out = torch.zeros(columns, model.config.num_classes)
    for g in range(columns):
        w = 0 if g < margin + hop else min((g - margin) // hop, last)
        clip = waveform[w * hop * column: w * hop * column + full]
        if clip.shape[0] >= 400:
            feats = extractor([clip])
        else:  # no whole analysis frame: all padding (log-mel 0), normalised
            feats = extractor.normalize(torch.zeros(1, model.config.input_tdim, 128))
        with torch.no_grad():
            out[g] = torch.sigmoid(model.forward_frames(feats))[0, g - w * hop]
    return out


@pytest.mark.parametrize("overlap", [False, True], ids=["hop=window", "50% overlap"])
@pytest.mark.parametrize("samples", [85_920, 48 * 1600 + 200], ids=["5.37 s", "tail under one frame"])
def test_stitched_frames_are_gapless_and_equal_the_brute_force(overlap, samples):
    model = frame_model(FrameHeadConfig(temporal="bigru", hidden=16))
    gen = torch.Generator().manual_seed(1)
    waveform = 0.1 * torch.randn(samples, generator=gen)
    result = score_frames(model, waveform, overlap=overlap, batch_size=3)
    columns = math.ceil(samples / 1600)
    assert result.scores.shape == (columns, 5)
    assert result.spans[0, 0] == 0 and result.spans[-1, 1] == samples / 16000
    np.testing.assert_array_equal(result.spans[1:, 0], result.spans[:-1, 1])  # no gap, no overlap
    torch.testing.assert_close(result.scores, brute_force_frames(model, waveform, overlap), atol=1e-5, rtol=0)
    assert result.windows == (5 if not overlap else math.ceil((columns - 12) / 6) + 1)


def test_score_frames_reads_a_file(tmp_path):
    model = frame_model()
    path = write_tone(tmp_path / "tone.wav", seconds=2.5)
    from ast_audio.audio.io import load_audio

    torch.testing.assert_close(score_frames(model, path).scores, score_frames(model, load_audio(path)).scores)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, ONNX, precisions, convert, embed


def test_checkpoint_round_trip_keeps_the_head(tmp_path):
    model = frame_model(HEADS[2])
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model"]["frame_head"] == HEADS[2].to_dict()
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        for got, want in zip(loaded.forward_both(x), model.forward_both(x)):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_old_clip_checkpoints_load_unchanged(tmp_path):
    clip = AST(tiny_config()).eval()
    save_model(clip, tmp_path / "clip")
    meta = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert "frame_head" not in meta["model"]  # what today's and older versions write
    loaded = load_model(tmp_path / "clip")
    assert not loaded.has_frame_head
    x = torch.randn(1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), clip(x), atol=0, rtol=0)


def test_a_clip_checkpoint_becomes_a_frame_model_and_classes_adapt(tmp_path):
    clip = AST(tiny_config()).eval()
    save_model(clip, tmp_path / "clip")
    head = FrameHeadConfig(temporal="bigru", hidden=16)
    model = load_model(tmp_path / "clip", frame_head=head)
    assert model.config.frame_head == head
    assert torch.equal(model.blocks[1].mlp.fc2.weight, clip.blocks[1].mlp.fc2.weight)  # encoder kept
    assert torch.equal(model.mlp_head[1].weight, clip.mlp_head[1].weight)  # same classes: clip head kept
    save_model(model, tmp_path / "frames")
    other = load_model(tmp_path / "frames", num_classes=3)  # new classes: class-sized layers new, the rest kept
    assert other.frame_head.classifier.weight.shape == (3, 16)
    assert torch.equal(other.frame_head.gru.weight_hh_l0, model.frame_head.gru.weight_hh_l0)


def test_bad_frame_head_in_a_checkpoint_is_one_line(tmp_path, capsys):
    save_model(frame_model(), tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    meta = json.loads(path.read_text())
    meta["model"]["frame_head"]["temporal"] = "lstm"
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="frame_head.temporal"):
        load_model(tmp_path / "m")
    tone = write_tone(tmp_path / "t.wav", seconds=1.0)
    rc, out, err = run_main(capsys, "tag", tone, "--checkpoint", tmp_path / "m")
    assert rc != 0 and "frame_head.temporal" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("with_frontend", [False, True], ids=["fbank", "waveform"])
def test_onnx_frame_output_equals_torch(tmp_path, with_frontend):
    pytest.importorskip("onnxruntime")
    from ast_audio.export.onnx import export_onnx
    from ast_audio.export.runtime import OnnxModel

    model = frame_model(HEADS[1])
    report = export_onnx(model, tmp_path / "m.onnx", with_frontend=with_frontend)
    graph = OnnxModel(report.path)
    assert graph.has_frame_head and [o.name for o in graph.session.get_outputs()] == ["logits", "frame_logits"]
    waves = 0.1 * torch.randn(3, model.frontend.input_samples, generator=torch.Generator().manual_seed(0))
    from ast_audio.audio.features import FeatureExtractor

    feats = FeatureExtractor(model.frontend)(waves)
    clip, frames = graph.run_both((waves if with_frontend else feats).numpy())
    with torch.no_grad():
        want_clip, want_frames = model.forward_both(feats)
    atol = ONNX_ATOL if not with_frontend else 1e-3  # the in-graph fbank rounds differently (export/onnx.py)
    np.testing.assert_allclose(frames, want_frames.numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(clip, want_clip.numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(graph(feats.numpy() if not with_frontend else waves.numpy()), clip, atol=0, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_precisions_keep_frame_scores(tmp_path, precision):
    if precision == "auto":
        pytest.importorskip("onnxruntime")  # auto may pick ONNX Runtime on this CPU
    model = frame_model(HEADS[1])
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", precision=precision)
    waveform = 0.1 * torch.randn(40_000, generator=torch.Generator().manual_seed(2))
    got, want = score_frames(loaded, waveform), score_frames(model, waveform)
    atol = 0 if precision == "fp32" else 0.02  # probabilities; int8/bf16 move tiny models' logits by ~1e-3
    torch.testing.assert_close(got.scores, want.scores, atol=atol, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.zeros(1, 128, 128)), model(torch.zeros(1, 128, 128)),
                                   atol=atol * 5, rtol=0)


def test_convert_to_transformers_refuses_a_frame_model_in_one_line(tmp_path, capsys):
    save_model(frame_model(), tmp_path / "m")
    with pytest.raises(ConfigError, match="no frame head"):
        save_hf(load_model(tmp_path / "m"), tmp_path / "hf")
    rc, out, err = run_main(capsys, "convert", tmp_path / "m", tmp_path / "hf", "--format", "hf")
    assert rc != 0 and "ASTForAudioClassification has no frame head" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "hf").exists()


def test_embed_and_tag_run_on_a_frame_model(tmp_path, capsys):
    save_model(frame_model(), tmp_path / "m")
    tone = write_tone(tmp_path / "t.wav", seconds=2.0)
    rc, out, err = run_main(capsys, "embed", tone, "--checkpoint", tmp_path / "m", "--precision", "fp32",
                            "-o", tmp_path / "e.npz")
    assert rc == 0, err
    with np.load(tmp_path / "e.npz") as data:
        assert any(v.shape[-1] == 32 for v in data.values() if v.dtype.kind == "f")
    rc, out, err = run_main(capsys, "tag", tone, "--checkpoint", tmp_path / "m", "--precision", "fp32")
    assert rc == 0, err
