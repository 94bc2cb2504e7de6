"""The AST network: grid arithmetic, shapes, parameter names and counts, attention paths, gradients."""

from __future__ import annotations

import pytest
import torch

from ast_audio import AST, ASTConfig, grid_size

from .conftest import tiny_model


@pytest.mark.parametrize("tdim,stride,grid", [
    # Spec §1.2 table; the patch counts 1212/850/657/512/600/144 are confirmed by the reference logs.
    (1024, 10, (12, 101)), (1024, 12, (10, 85)), (1024, 14, (9, 73)), (1024, 16, (8, 64)),
    (512, 10, (12, 50)), (128, 10, (12, 12)),
])
def test_grid_size_matches_reference_table(tdim, stride, grid):
    assert grid_size(128, tdim, 16, 16, stride, stride) == grid
    assert ASTConfig(input_tdim=tdim, fstride=stride, tstride=stride).grid == grid


def test_grid_size_frame_patches():
    # SSAST frame patches: the whole frequency axis x 2 frames, stride 2 in time -> 1 x 512 for 1024 frames.
    assert grid_size(128, 1024, fshape=128, tshape=2, fstride=128, tstride=2) == (1, 512)


def test_parameter_names_are_timm_deit_names():
    model = tiny_model(depth=1)
    expected = {"cls_token", "dist_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias", "mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight",
                "mlp_head.1.bias"}
    expected |= {f"blocks.0.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                 for p in ("weight", "bias")}
    assert set(model.state_dict()) == expected


@pytest.mark.parametrize("tdim,classes,millions", [
    # Spec §1.3: logged totals 88.132 / 87.295 / 86.933 M include 1.538 M of unused ImageNet heads.
    (1024, 527, 88.132 - 1.538), (512, 50, 87.295 - 1.538), (128, 35, 86.933 - 1.538),
])
def test_base384_parameter_counts_match_reference_logs(tdim, classes, millions):
    with torch.device("meta"):
        model = AST(ASTConfig(input_tdim=tdim, num_classes=classes))
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) < 0.001


@pytest.mark.parametrize("changes", [
    dict(), dict(fstride=16, tstride=16), dict(input_tdim=200, tstride=7), dict(pooling="mean"),
    dict(fshape=128, tshape=2, fstride=128, tstride=2), dict(input_fdim=64, fstride=8),
])
def test_shapes_and_every_parameter_gets_a_gradient(changes):
    model = tiny_model(**changes).train()
    cfg = model.config
    x = torch.randn(2, cfg.input_tdim, cfg.input_fdim)
    logits = model(x)
    assert logits.shape == (2, cfg.num_classes)
    assert model.forward_features(x).shape == (2, cfg.num_patches + 2, cfg.embed_dim)
    assert model.embedding(x).shape == (2, cfg.embed_dim)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_token_order_is_frequency_major():
    """Token f*t_dim + t sees mel rows [f*fstride, +16) and frames [t*tstride, +16)."""
    model = tiny_model()
    cfg = model.config
    x = torch.zeros(1, cfg.input_tdim, cfg.input_fdim)
    x[0, 20:36, 30:46] = 1.0  # frames 20..35, mel bins 30..45: exactly patch (f=3, t=2)
    with torch.no_grad():
        tokens = model.patch_embed(x)  # (1, N, D)
        base = model.patch_embed(torch.zeros_like(x))
    changed = ((tokens - base).abs().sum(-1) > 0).nonzero()[:, 1].tolist()
    f_dim, t_dim = cfg.grid
    assert 3 * t_dim + 2 in changed
    for idx in changed:  # every touched patch overlaps the box
        f, t = divmod(idx, t_dim)
        assert f * 10 < 46 and f * 10 + 16 > 30 and t * 10 < 36 and t * 10 + 16 > 20


def test_sdpa_equals_explicit_attention_and_maps_are_distributions():
    model = tiny_model()
    x = torch.randn(3, 128, 128)
    with torch.no_grad():
        fast = model.forward_features(x)
        slow, maps = model.forward_features(x, return_attention=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)  # float32 reassociation only
    n = model.config.num_patches + 2
    assert len(maps) == model.config.depth
    assert all(m.shape == (3, model.config.num_heads, n, n) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, model.config.num_heads, n))


def test_pooling_definitions():
    model = tiny_model()
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.pool(feats), (feats[:, 0] + feats[:, 1]) / 2)
        torch.testing.assert_close(model(x), model.mlp_head((feats[:, 0] + feats[:, 1]) / 2))
    mean_model = tiny_model(pooling="mean")
    with torch.no_grad():
        feats = mean_model.forward_features(x)
        torch.testing.assert_close(mean_model.pool(feats), feats[:, 2:].mean(1))


def test_batch_equals_items():
    model = tiny_model()
    x = torch.randn(4, 128, 128)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


def test_wrong_input_shape_says_what_was_expected():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"expected input \(B, 128, 128\)"):
        model(torch.randn(2, 100, 128))
