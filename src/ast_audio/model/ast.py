"""The Audio Spectrogram Transformer (Gong, Chung & Glass, Interspeech 2021), in forward order.

PatchEmbed -> Attention -> Mlp -> Block -> FrameHead -> AST. Parameter names are timm's ViT/DeiT names
(`cls_token`, `dist_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.*`, `norm`) plus the reference
head `mlp_head.0` (LayerNorm) / `mlp_head.1` (Linear), so DeiT checkpoints and reference AST checkpoints
load without a rename table. A frame model (`ASTConfig.frame_head`) adds `frame_head.*`: per-time-column logits
read off the patch tokens (sound event detection, as AST-SED and the DCASE task 4 systems), beside the clip head.

Glossary: B batch, T frames, F mel bins, N patch tokens (f_dim x t_dim), P prefix tokens (2), D width, H heads,
C classes, K the frame head's hidden width.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TEMPORAL_MLP_RATIO, ASTConfig, FrameHeadConfig, FrontendConfig, check_input_sizes
from ..errors import ConfigError
from ..labels import unnamed_labels
from .precision import PrecisionChoice
from .scores import probabilities

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

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.norm1(x), need_weights)
        x = x + attn_out
        x = x + self.mlp(self.norm2(x))
        return x, weights


def encoder_block(config: ASTConfig) -> Block:
    """A transformer block of the encoder's width, heads and MLP ratio."""
    dim = config.embed_dim
    return Block(dim, config.num_heads, int(dim * config.mlp_ratio), config.layer_norm_eps)


class FrameHead(nn.Module):
    """Patch tokens -> per-time-column logits (B, t_dim, C); see `FrameHeadConfig` for the choices.

    Frequency pooling per time column (mean, or a transformer block across the column's frequency tokens, then
    mean), LayerNorm, an optional sequence model over time (BiGRU or transformer layers, K wide), a Linear to the
    classes. No position embedding of its own: the tokens carry the encoder's, and the head works on any grid.
    """

    def __init__(self, config: ASTConfig, head: FrameHeadConfig) -> None:
        super().__init__()
        self.head = head
        self.grid = config.grid
        dim, hidden, classes = config.embed_dim, head.hidden, config.num_classes
        if head.freq_pool == "attention":
            self.freq_block = encoder_block(config)
        self.norm = nn.LayerNorm(dim, eps=config.head_norm_eps)
        width = dim
        if head.temporal != "none":
            self.proj = nn.Linear(dim, hidden)
            width = hidden
        if head.temporal == "bigru":
            self.gru = nn.GRU(hidden, hidden // 2, num_layers=head.temporal_layers, batch_first=True,
                              bidirectional=True)
        elif head.temporal == "transformer":
            self.layers = nn.ModuleList([Block(hidden, head.temporal_heads, TEMPORAL_MLP_RATIO * hidden,
                                               config.layer_norm_eps) for _ in range(head.temporal_layers)])
            self.out_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(width, classes)
        if head.weak_pool == "attention":
            self.weak_attention = nn.Linear(classes, classes)

    def reset_parameters(self) -> None:
        """Weak attention starts at zero: uniform weights over time (mean pooling) until it learns."""
        if self.head.weak_pool == "attention":
            nn.init.zeros_(self.weak_attention.weight)
            nn.init.zeros_(self.weak_attention.bias)

    def pool_frequency(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, D) patch tokens -> (B, t_dim, D), one vector per time column."""
        B, N, D = patches.shape
        f_dim, t_dim = self.grid
        x = patches.reshape(B, f_dim, t_dim, D)  # token n = f_idx * t_dim + t_idx (PatchEmbed's order)
        if self.head.freq_pool == "mean":
            return x.mean(dim=1)  # (B, f_dim, t_dim, D) -> (B, t_dim, D)
        x = x.transpose(1, 2).reshape(B * t_dim, f_dim, D)  # one sequence of f_dim tokens per column
        x, _ = self.freq_block(x)  # attention across the column's frequency tokens
        return x.mean(dim=1).reshape(B, t_dim, D)  # (B * t_dim, f_dim, D) -> (B, t_dim, D)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, D) final-normed patch tokens -> (B, t_dim, C) frame logits."""
        x = self.norm(self.pool_frequency(patches))  # (B, t_dim, D)
        if self.head.temporal != "none":
            x = self.proj(x)  # (B, t_dim, D) -> (B, t_dim, K)
        if self.head.temporal == "bigru":
            x, _ = self.gru(x)  # (B, t_dim, K): both directions' K / 2 concatenated
        elif self.head.temporal == "transformer":
            for layer in self.layers:
                x, _ = layer(x)  # attention across time
            x = self.out_norm(x)
        return self.classifier(x)  # (B, t_dim, K or D) -> (B, t_dim, C)

    def weak_probabilities(self, frame_logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
        """(B, t_dim, C) frame logits -> (B, C) clip probabilities for weak labels, pooled over time.

        linear_softmax: sum_t p^2 / sum_t p per class (the DCASE baseline's; loud frames weigh more, so a short
        event is not averaged away); attention: sum_t w_t p_t with w = softmax over time of a Linear map of the
        frame logits (the baseline maps its RNN features instead; mapping the logits keeps pooling a function of
        the frame output alone, so it also runs on exported or stitched frame logits).
        """
        p = probabilities(frame_logits.float(), multi_label)  # (B, t_dim, C)
        if self.head.weak_pool == "linear_softmax":
            return (p * p).sum(dim=1) / p.sum(dim=1).clamp_min(torch.finfo(p.dtype).tiny)
        weights = self.weak_attention(frame_logits.to(self.weak_attention.weight.dtype)).float().softmax(dim=1)
        return (weights * p).sum(dim=1)  # (B, t_dim, C) -> (B, C)


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
        self.blocks = nn.ModuleList([encoder_block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=config.head_norm_eps), nn.Linear(dim, config.num_classes))
        if config.frame_head is not None:
            self.frame_head = FrameHead(config, config.frame_head)
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
        if self.has_frame_head:
            self.frame_head.reset_parameters()

    @property
    def has_frame_head(self) -> bool:
        """Whether this is a frame model (per-time-column logits, `forward_frames`) besides a clip model."""
        return self.config.frame_head is not None

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

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised fbank -> (B, t_dim, C) frame logits (float32), column j on the timeline of
        `ast_audio.config.column_span`. Frame models only."""
        return self.frame_logits(self.forward_features(x))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) -> ((B, C) clip logits, (B, t_dim, C) frame logits), both from one encoder pass, float32."""
        tokens = self.forward_features(x)  # (B, P + N, D)
        return self.forward_head(self.pool(tokens)).float(), self.frame_logits(tokens)

    def frame_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + N, D) final-normed tokens -> (B, t_dim, C) frame logits (float32)."""
        if not self.has_frame_head:
            raise ConfigError("this is a clip model (no frame head): it gives one row of logits per input; load or "
                              "train a frame model (ASTConfig.frame_head) for frame scores")
        return self.frame_head(tokens[:, NUM_PREFIX_TOKENS:]).float()  # (B, N, D) patches -> (B, t_dim, C)

    def weak_probabilities(self, frame_logits: torch.Tensor) -> torch.Tensor:
        """(B, t_dim, C) frame logits -> (B, C) clip probabilities pooled over time, as the frame head's
        `weak_pool` says (training on weak labels; `FrameHead.weak_probabilities`)."""
        if not self.has_frame_head:
            raise ConfigError("weak pooling needs a frame model (ASTConfig.frame_head); this is a clip model")
        return self.frame_head.weak_probabilities(frame_logits, self.multi_label)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, D) pooled embedding for downstream use (the maintainer's recipe, spec §5.6)."""
        return self.forward_head(self.pool(self.forward_features(x)), pre_logits=True)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer attention probabilities, `depth` tensors of shape (B, H, P + N, P + N)."""
        return self.forward_features(x, return_attention=True)[1]
