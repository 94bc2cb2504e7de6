"""ImageNet ViT/DeiT -> AST adaptation (spec §1.4) and AudioSet -> other grids (§1.5), against hand-computed values.

The expected position embeddings are computed here independently of `adapt_pos_embed`: center cuts by explicit
index ranges, bilinear resizing with a hand-written half-pixel (align_corners=False) weight matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ast_audio import ASTConfig, CheckpointError, ConfigError
from ast_audio.model import AST
from ast_audio.weights.adapt import HEAD_KEYS, adapt_input_conv, adapt_model, from_imagenet
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import tiny_model
from helpers import DIM, make_imagenet


def config(**changes) -> ASTConfig:
    base = dict(model_size="base384", embed_dim=DIM, num_heads=4, depth=2, num_classes=10)
    base.update(changes)
    return ASTConfig(**base)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear resizing with half-pixel centres (align_corners=False):
    source coordinate s = (j + 0.5) * n_in / n_out - 0.5, clamped at 0, between floor(s) and floor(s) + 1."""
    w = np.zeros((n_out, n_in))
    for j in range(n_out):
        s = max((j + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = s - i0
        w[j, i0] += 1 - frac
        w[j, i1] += frac
    return w


def patch_grid(pos_embed: torch.Tensor, rows: int, cols: int, prefix: int = 2) -> np.ndarray:
    """(1, P + rows*cols, D) -> (rows, cols, D), frequency-major as the model orders tokens."""
    return pos_embed[0, prefix:].reshape(rows, cols, -1).double().numpy()


def expected_axis(grid: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Hand-written reference rule: center-cut [n//2 - size//2, +size) if size <= n, else bilinear resize."""
    n = grid.shape[axis]
    if size <= n:
        start = n // 2 - size // 2
        return np.take(grid, range(start, start + size), axis=axis)
    return np.moveaxis(np.tensordot(bilinear_matrix(n, size), np.moveaxis(grid, axis, 0), axes=1), 0, axis)


# ---------------------------------------------------------------------------------------------------------------
# patch conv


def test_adapt_input_conv_sum_and_mean():
    w = torch.randn(4, 3, 16, 16)
    by_hand = w[:, 0:1] + w[:, 1:2] + w[:, 2:3]
    torch.testing.assert_close(adapt_input_conv(w), by_hand)
    torch.testing.assert_close(adapt_input_conv(w, mode="mean"), by_hand / 3)
    assert adapt_input_conv(w).shape == (4, 1, 16, 16)
    with pytest.raises(ConfigError, match="in_chans_reduce"):
        adapt_input_conv(w, mode="max")
    with pytest.raises(CheckpointError, match="RGB"):
        adapt_input_conv(torch.randn(4, 1, 16, 16))


def test_summed_kernel_equals_three_identical_channels():
    """Why the reference sums (spec §1.4): one channel through the sum == the same image in R, G and B."""
    w, x = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.randn(1, 1, 32, 48, dtype=torch.float64)
    rgb = torch.nn.functional.conv2d(x.expand(1, 3, 32, 48), w, stride=10)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, adapt_input_conv(w), stride=10), rgb)


# ---------------------------------------------------------------------------------------------------------------
# from_imagenet


def test_from_imagenet_copies_and_drops_exactly():
    src = make_imagenet(side=24)
    cfg = config(input_tdim=128)
    out = from_imagenet(src, cfg)
    assert set(out) == set(AST(cfg).state_dict())
    assert not {"head.weight", "head_dist.weight"} & set(out)
    for key in ("cls_token", "dist_token", "patch_embed.proj.bias", "norm.weight", "blocks.1.attn.qkv.weight",
                "blocks.0.mlp.fc2.bias"):
        assert torch.equal(out[key], src[key]), key
    torch.testing.assert_close(out["patch_embed.proj.weight"], src["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(out["pos_embed"][0, :2], src["pos_embed"][0, :2])  # cls and dist embeddings reused


def test_from_imagenet_mean_option():
    src = make_imagenet(side=6)
    out = from_imagenet(src, config(input_tdim=64, input_fdim=64), in_chans_reduce="mean")
    torch.testing.assert_close(out["patch_embed.proj.weight"], src["patch_embed.proj.weight"].mean(1, keepdim=True))


@pytest.mark.parametrize("cfg_changes,grid,rows,cols", [
    (dict(input_tdim=1024), (12, 101), range(6, 18), None),  # AudioSet: freq rows 6..17, time 24 -> 101
    (dict(input_tdim=128), (12, 12), range(6, 18), range(6, 18)),  # Speech Commands: cut both
    (dict(input_tdim=512), (12, 50), range(6, 18), None),  # ESC-50 ImageNet-only: time 24 -> 50
    (dict(input_tdim=1024, fstride=16, tstride=16), (8, 64), range(8, 16), None),  # stride 16: rows 8..15
])
def test_imagenet_pos_embed_worked_examples(cfg_changes, grid, rows, cols):
    """Spec §1.4 worked examples for base384 (ImageNet grid 24 x 24)."""
    src = make_imagenet(side=24)
    cfg = config(**cfg_changes)
    assert cfg.grid == grid
    out = patch_grid(from_imagenet(src, cfg)["pos_embed"], *grid)
    image = patch_grid(src["pos_embed"], 24, 24)
    kept = image[list(rows)]  # frequency rows kept by the center cut
    if cols is None:  # time axis interpolated: a bilinear matrix applied along the columns
        expected = np.einsum("tj,fjd->ftd", bilinear_matrix(24, grid[1]), kept)
    else:
        expected = kept[:, list(cols)]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_imagenet_pos_embed_interpolates_both_axes():
    """f_dim 29 > 24 (fstride 4) and t_dim 101 > 24: separable bilinear on both axes."""
    src = make_imagenet(side=24)
    cfg = config(input_tdim=1024, fstride=4)
    assert cfg.grid == (29, 101)
    out = patch_grid(from_imagenet(src, cfg)["pos_embed"], 29, 101)
    image = patch_grid(src["pos_embed"], 24, 24)
    expected = np.einsum("fi,ijd,tj->ftd", bilinear_matrix(24, 29), image, bilinear_matrix(24, 101))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_small_imagenet_grid_and_rule():
    """A 6 x 6 ImageNet grid onto a 3 x 9 AST grid: rows 2..4 cut, time 6 -> 9 interpolated."""
    src = make_imagenet(side=6)
    cfg = config(input_fdim=36, input_tdim=96)  # grid (36-16)//10+1 = 3 by (96-16)//10+1 = 9
    assert cfg.grid == (3, 9)
    out = patch_grid(from_imagenet(src, cfg)["pos_embed"], 3, 9)
    image = patch_grid(src["pos_embed"], 6, 6)
    np.testing.assert_allclose(out, expected_axis(expected_axis(image, 9, 1), 3, 0), atol=1e-5)
    np.testing.assert_allclose(out, np.einsum("tj,fjd->ftd", bilinear_matrix(6, 9), image[2:5]), atol=1e-5)


def test_vit_without_dist_token_reuses_cls():
    src = make_imagenet(side=6, distilled=False)
    out = from_imagenet(src, config(input_fdim=36, input_tdim=96))
    assert torch.equal(out["dist_token"], src["cls_token"])
    assert torch.equal(out["pos_embed"][0, 0], src["pos_embed"][0, 0])
    assert torch.equal(out["pos_embed"][0, 1], src["pos_embed"][0, 0])
    # the same patch embeddings as a distilled checkpoint whose grid is identical
    distilled = {**src, "pos_embed": torch.cat([src["pos_embed"][:, :1], src["pos_embed"]], 1),
                 "dist_token": src["cls_token"]}
    assert torch.equal(from_imagenet(distilled, config(input_fdim=36, input_tdim=96))["pos_embed"], out["pos_embed"])


def test_head_is_freshly_initialised():
    cfg = config(input_tdim=128)
    torch.manual_seed(123)
    out = from_imagenet(make_imagenet(side=24), cfg)
    torch.manual_seed(123)
    fresh = AST(cfg).state_dict()
    for key in HEAD_KEYS:
        assert torch.equal(out[key], fresh[key]), key
    assert out["mlp_head.1.weight"].shape == (10, DIM)
    assert torch.equal(out["mlp_head.0.weight"], torch.ones(DIM)) and not out["mlp_head.1.bias"].any()


def test_model_wrapper_and_key_set_is_exact():
    src = make_imagenet(side=6)
    cfg = config(input_fdim=36, input_tdim=96)
    assert set(from_imagenet({"model": src}, cfg)) == set(from_imagenet(src, cfg))
    with pytest.raises(CheckpointError, match="fc_norm.weight"):
        from_imagenet({**src, "fc_norm.weight": torch.ones(DIM)}, cfg)
    incomplete = {k: v for k, v in src.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(CheckpointError, match="blocks.1.norm2.bias"):
        from_imagenet(incomplete, cfg)


def test_kernel_width_and_depth_must_match():
    with pytest.raises(ConfigError, match="32x32"):
        from_imagenet(make_imagenet(side=6, kernel=32), config(input_tdim=128))
    with pytest.raises(ConfigError, match="128x2"):
        from_imagenet(make_imagenet(side=6), config(input_tdim=128, fshape=128, tshape=2, fstride=128, tstride=2))
    with pytest.raises(ConfigError, match="embed_dim"):
        from_imagenet(make_imagenet(side=6, dim=64), config(input_tdim=128))
    with pytest.raises(ConfigError, match="depth"):
        from_imagenet(make_imagenet(side=6, depth=3), config(input_tdim=128))


def test_load_model_reads_imagenet_files(tmp_path):
    src = make_imagenet(side=24)
    torch.save({"model": src}, tmp_path / "deit.pth")
    model = load_model(tmp_path / "deit.pth", num_heads=4, input_tdim=128, num_classes=35)
    c = model.config
    # 32 wide, 2 blocks: no reference size, so "custom" (issue 19 item 11: the config says what was built)
    assert (c.model_size, c.embed_dim, c.depth, c.grid, c.num_classes) == ("custom", DIM, 2, (12, 12), 35)
    assert model.labels[0] == "class_0" and model(torch.randn(1, 128, 128)).shape == (1, 35)
    torch.testing.assert_close(model.patch_embed.proj.weight, src["patch_embed.proj.weight"].sum(1, keepdim=True))

    from safetensors.torch import save_file

    save_file(src, str(tmp_path / "deit.safetensors"))
    mean = load_model(tmp_path / "deit.safetensors", num_heads=4, input_tdim=128, in_chans_reduce="mean")
    assert mean.config.num_classes == 527
    torch.testing.assert_close(mean.patch_embed.proj.weight, src["patch_embed.proj.weight"].mean(1, keepdim=True))


def test_load_model_imagenet_defaults_to_the_matching_size(tmp_path):
    """A 192-wide 14 x 14 checkpoint is tiny224: 3 heads, AudioSet-sized input and head by default."""
    torch.save(make_imagenet(side=14, dim=192, depth=12), tmp_path / "deit_tiny.pth")  # all 12 blocks: tiny224
    model = load_model(tmp_path / "deit_tiny.pth")
    c = model.config
    assert (c.model_size, c.num_heads, c.grid, c.num_classes, c.imagenet_grid) == ("tiny224", 3, (12, 101), 527, 14)


# ---------------------------------------------------------------------------------------------------------------
# AudioSet model -> other grids (spec §1.5)


def test_audioset_to_esc50_and_speechcommands_cut_time_columns():
    model = tiny_model(0, input_tdim=1024, num_classes=527, depth=1)
    image = patch_grid(model.pos_embed.detach(), 12, 101)
    esc = adapt_model(model, input_tdim=512, num_classes=50)
    np.testing.assert_array_equal(patch_grid(esc.pos_embed.detach(), 12, 50), image[:, 25:75])  # cols 25..74
    sc = adapt_model(model, input_tdim=128, num_classes=35)
    np.testing.assert_array_equal(patch_grid(sc.pos_embed.detach(), 12, 12), image[:, 44:56])  # cols 44..55
    longer = adapt_model(model, input_tdim=2048)  # longer input: stretched, not extrapolated
    np.testing.assert_allclose(patch_grid(longer.pos_embed.detach(), 12, 204),
                               np.einsum("tj,fjd->ftd", bilinear_matrix(101, 204), image), atol=1e-5)


def test_adapt_round_trip_through_native(tmp_path):
    model = tiny_model(1, input_tdim=1024, num_classes=527, depth=1)
    adapted = adapt_model(model, fstride=12, tstride=12, num_classes=3, labels=["a", "b", "c"])
    save_model(adapted, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.grid == (10, 85) and loaded.labels == ("a", "b", "c")
    x = torch.randn(1, 1024, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x), adapted.eval()(x))
