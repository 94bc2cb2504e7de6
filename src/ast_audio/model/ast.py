"""The Audio Spectrogram Transformer (Gong, Chung & Glass, Interspeech 2021), in forward order.

PatchEmbed -> Attention -> Mlp -> Block -> AST. Parameter names are timm's ViT/DeiT names
(`cls_token`, `dist_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.*`, `norm`) plus the reference
head `mlp_head.0` (LayerNorm) / `mlp_head.1` (Linear), so DeiT checkpoints and reference AST checkpoints
load without a rename table.

Glossary: B batch, T frames, F mel bins, N patch tokens, P prefix tokens (2), D width, H heads.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ASTConfig, FrontendConfig, check_input_sizes
from ..errors import ConfigError
from ..labels import unnamed_labels
from .precision import PrecisionChoice

NUM_PREFIX_TOKENS = 2  # DeiT's cls and distillation tokens


class PatchEmbed(nn.Module):
    """Overlapping (fshape x tshape) patches with stride (fstride, tstride) -> D-dim tokens, frequency-major."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=(config.fshape, config.tshape),
                              stride=(config.fstride, config.tstride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1).transpose(2, 3)  # (B, T, F) -> (B, 1, F, T): conv height = frequency
        x = self.proj(x)  # (B, 1, F, T) -> (B, D, f_dim, t_dim)
        return x.flatten(2).transpose(1, 2)  # (B, D, f_dim, t_dim) -> (B, N, D), token = f_idx * t_dim + t_idx


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (rows: q, k, v; head h owns rows h*d..h*d+d-1)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        # When set (int8 models: bf16), the fused attention runs in this dtype; q, k, v are cast on the way in.
        self.sdpa_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3D) -> (B, N, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # -> 3 x (B, H, N, d)
        if need_weights:
            # Explicit softmax so the maps can be returned (explanation); same maths as SDPA.
            weights = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            weights = weights.softmax(dim=-1)
            out = weights @ v
        else:
            weights = None
            if self.sdpa_dtype is not None and self.sdpa_dtype != q.dtype:
                dtype = self.sdpa_dtype
                out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype)).to(q.dtype)
            else:
                out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, H, N, d) -> (B, N, D)
        return self.proj(out), weights


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). No dropout, no drop-path (as AST)."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.norm1(x), need_weights)
        x = x + attn_out
        x = x + self.mlp(self.norm2(x))
        return x, weights


class AST(nn.Module):
    """Audio Spectrogram Transformer: (B, T, F) normalised log-mel -> (B, num_classes) raw logits.

    Args:
        config: the architecture.
        frontend: how waveforms become inputs (saved with the weights); defaults to the AudioSet front end
            sized to this config.
        labels: class names, `num_classes` of them; defaults to "class_0", "class_1", ...
        multi_label: True when classes are independent (sigmoid scores, e.g. AudioSet), False for
            single-label tasks (softmax scores, e.g. ESC-50).
    """

    def __init__(self, config: ASTConfig, frontend: FrontendConfig | None = None,
                 labels: list[str] | tuple[str, ...] | None = None, multi_label: bool = True) -> None:
        super().__init__()
        self.config = config
        if frontend is None:
            frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
        check_input_sizes(config, frontend)
        self.frontend = frontend
        labels = tuple(labels) if labels is not None else unnamed_labels(config.num_classes)
        if len(labels) != config.num_classes:
            raise ConfigError(f"{len(labels)} label names given for {config.num_classes} classes")
        self.labels = labels
        self.multi_label = bool(multi_label)
        # What the model computes in and why: set by `apply_precision` when it converts the model (bf16, int8).
        self.precision: str = "fp32"
        self.precision_choice: PrecisionChoice | None = None

        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + NUM_PREFIX_TOKENS, dim))
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=config.head_norm_eps), nn.Linear(dim, config.num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT init (trunc-normal 0.02 for tokens, pos-embed and Linear weights, zero biases, unit LayerNorms);
        the patch conv keeps PyTorch's default init, as in the reference's `imagenet_pretrain=False` branch."""
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, P + N, D) tokens with position embeddings added."""
        if x.dim() != 3 or x.shape[1:] != (self.config.input_tdim, self.config.input_fdim):
            raise ValueError(f"expected input (B, {self.config.input_tdim}, {self.config.input_fdim}) "
                             f"= (batch, frames, mel bins), got {tuple(x.shape)}")
        x = self.patch_embed(x.to(self.pos_embed.dtype))  # (B, T, F) -> (B, N, D); bf16 models take bf16 input
        B = x.shape[0]
        prefix = torch.cat([self.cls_token.expand(B, -1, -1), self.dist_token.expand(B, -1, -1)], dim=1)  # (B, P, D)
        x = torch.cat([prefix, x], dim=1)  # (B, P + N, D)
        return x + self.pos_embed

    def forward_features(self, x: torch.Tensor, return_attention: bool = False, layer: int | None = None):
        """(B, T, F) -> (B, P + N, D) final-normed tokens; with `return_attention`, also the per-layer
        attention maps, a list of `depth` tensors (B, H, P + N, P + N).

        `layer` = k in 1..depth stops after block k and returns its output tokens as they are (an intermediate
        layer, for embeddings; the final norm belongs to the last layer, so `layer=depth` gives the normed tokens
        the head sees). Negative k counts from the end (-1 = the last block).
        """
        stop = self.check_layer(layer) if layer is not None else self.config.depth
        x = self.embed(x)
        maps = []
        for block in self.blocks[:stop]:
            x, weights = block(x, need_weights=return_attention)
            if return_attention:
                maps.append(weights)
        if stop == self.config.depth:
            x = self.norm(x)
        return (x, maps) if return_attention else x

    def check_layer(self, layer: int) -> int:
        """`layer` (1..depth, or -depth..-1 from the end) as a block count 1..depth; ConfigError otherwise."""
        depth = self.config.depth
        if isinstance(layer, bool) or not isinstance(layer, int) or not (1 <= abs(layer) <= depth):
            raise ConfigError(f"layer must be a block number in 1..{depth} (or -{depth}..-1 from the end) for this "
                              f"{depth}-block model, got {layer!r}")
        return layer if layer > 0 else depth + 1 + layer

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P + N, D) -> (B, D): mean of the cls and dist outputs (AST), or of the patch tokens (SSAST 'mean')."""
        if self.config.pooling == "tokens":
            return (x[:, 0] + x[:, 1]) / 2
        return x[:, NUM_PREFIX_TOKENS:].mean(dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, D) pooled embedding -> (B, num_classes) logits (or the embedding itself with `pre_logits`)."""
        return x if pre_logits else self.mlp_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised fbank -> (B, num_classes) raw logits (float32 whatever the precision)."""
        return self.forward_head(self.pool(self.forward_features(x))).float()

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, D) pooled embedding for downstream use (the maintainer's recipe, spec §5.6)."""
        return self.forward_head(self.pool(self.forward_features(x)), pre_logits=True)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer attention probabilities, `depth` tensors of shape (B, H, P + N, P + N)."""
        return self.forward_features(x, return_attention=True)[1]
