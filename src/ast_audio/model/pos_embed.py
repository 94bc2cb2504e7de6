"""Position-embedding resizing: pure functions on tensors (the grid arithmetic is `ast_audio.config.grid_size`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def _fit_axis(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Center-cut `grid` (1, D, H, W) along `axis` (2 = freq, 3 = time) to `size`, or bilinearly stretch to it.

    The reference cuts when the target is not larger than the source and interpolates otherwise
    (align_corners=False, no antialias). Equal sizes are an exact identity either way.
    """
    current = grid.shape[axis]
    if size <= current:
        start = current // 2 - size // 2
        return grid.narrow(axis, start, size)
    target = (size, grid.shape[3]) if axis == 2 else (grid.shape[2], size)
    return F.interpolate(grid, size=target, mode="bilinear", align_corners=False)


def adapt_pos_embed(pos_embed: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int],
                    num_prefix_tokens: int = 2) -> torch.Tensor:
    """Resize a (1, P + H*W, D) position embedding from grid `src_grid` to `dst_grid` the AST way (spec §1.4/§1.5).

    Time axis first, then frequency; each axis is center-cut if the target is not larger, else bilinearly
    interpolated. The P prefix-token (cls, dist) embeddings are reused unchanged.
    Returns a new (1, P + f*t, D) tensor; `pos_embed` is not modified.
    """
    src_f, src_t = src_grid
    dst_f, dst_t = dst_grid
    expected = num_prefix_tokens + src_f * src_t
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != expected:
        raise ConfigError(f"pos_embed of shape {tuple(pos_embed.shape)} does not fit grid {src_f}x{src_t} with "
                          f"{num_prefix_tokens} prefix tokens (expected (1, {expected}, D))")
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[2]
    grid = patches.transpose(1, 2).reshape(1, dim, src_f, src_t)  # (1, f*t, D) -> (1, D, f, t)
    grid = _fit_axis(grid, dst_t, axis=3)
    grid = _fit_axis(grid, dst_f, axis=2)
    patches = grid.reshape(1, dim, dst_f * dst_t).transpose(1, 2)  # (1, D, f, t) -> (1, f*t, D)
    return torch.cat([prefix, patches], dim=1).contiguous()
