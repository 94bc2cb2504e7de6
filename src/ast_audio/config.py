"""Frozen, typed configurations saved with every checkpoint.

`ASTConfig` describes the network (field names follow the reference `ASTModel` arguments);
`FrontendConfig` describes how a waveform becomes the network's input. Both round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

# Reference model sizes (spec §1.1): embed dim, heads, depth, ImageNet grid side.
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny224": (192, 3, 12, 14),
    "small224": (384, 6, 12, 14),
    "base224": (768, 12, 12, 14),
    "base384": (768, 12, 12, 24),
}

# Dataset normalisation statistics of the reference recipes (spec §2.1), computed with augmentation on.
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
ESC50_MEAN, ESC50_STD = -6.6268077, 5.358466
SPEECHCOMMANDS_MEAN, SPEECHCOMMANDS_STD = -6.845978, 5.5654526


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _from_dict(cls: type, data: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    _check(not unknown, f"unknown {cls.__name__} field(s) {sorted(unknown)}; expected some of {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class ASTConfig:
    """Architecture of an AST.

    `model_size` picks the reference width/heads/depth; `embed_dim`, `depth`, `num_heads` override it
    (for small test or demo models) and are filled in from `model_size` when left as None.
    Inputs are (B, T, F) = (batch, input_tdim frames, input_fdim mel bins).
    """

    model_size: str = "base384"
    input_fdim: int = 128
    input_tdim: int = 1024
    fstride: int = 10
    tstride: int = 10
    fshape: int = 16
    tshape: int = 16
    num_classes: int = 527
    pooling: Literal["tokens", "mean"] = "tokens"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    # timm DeiT uses 1e-6 in the blocks and final norm; the head LayerNorm is PyTorch's default 1e-5.
    # Models converted from transformers keep its 1e-12 in both places so logits match.
    layer_norm_eps: float = 1e-6
    head_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check(self.model_size in MODEL_SIZES,
               f"model_size must be one of {sorted(MODEL_SIZES)}, got {self.model_size!r}")
        dim, heads, depth, _ = MODEL_SIZES[self.model_size]
        for name, default in (("embed_dim", dim), ("num_heads", heads), ("depth", depth)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for name in ("input_fdim", "input_tdim", "fstride", "tstride", "fshape", "tshape", "num_classes",
                     "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"{name} must be a positive integer, got {value!r}")
        _check(self.embed_dim % self.num_heads == 0,
               f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        _check(self.pooling in ("tokens", "mean"), f"pooling must be 'tokens' or 'mean', got {self.pooling!r}")
        _check(self.fshape <= self.input_fdim and self.tshape <= self.input_tdim,
               f"patch {self.fshape}x{self.tshape} does not fit the input {self.input_fdim}x{self.input_tdim} "
               "(mel bins x frames); use a smaller fshape/tshape or a longer input")
        _check(self.mlp_ratio > 0, f"mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def grid(self) -> tuple[int, int]:
        """(f_dim, t_dim): the patch grid, frequency rows by time columns."""
        from .model.pos_embed import grid_size

        return grid_size(self.input_fdim, self.input_tdim, self.fshape, self.tshape, self.fstride, self.tstride)

    @property
    def num_patches(self) -> int:
        f_dim, t_dim = self.grid
        return f_dim * t_dim

    @property
    def imagenet_grid(self) -> int:
        """Side of the square patch grid of the ImageNet model this size comes from (24 for base384)."""
        return MODEL_SIZES[self.model_size][3]

    def replace(self, **changes: Any) -> ASTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ASTConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class FrontendConfig:
    """Waveform -> normalised log-mel input, as the reference dataloader does it (spec §2.1).

    Kaldi fbank at `sample_rate` Hz with `num_mel_bins` bins, zero-padded or cropped to `target_length`
    frames in the log-mel domain, then normalised as (x - mean) / (2 * std).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    target_length: int = 1024
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0

    def __post_init__(self) -> None:
        _check(isinstance(self.sample_rate, int) and self.sample_rate > 0,
               f"sample_rate must be a positive integer in Hz, got {self.sample_rate!r}")
        _check(isinstance(self.num_mel_bins, int) and self.num_mel_bins > 0,
               f"num_mel_bins must be a positive integer, got {self.num_mel_bins!r}")
        _check(isinstance(self.target_length, int) and self.target_length > 0,
               f"target_length must be a positive number of frames, got {self.target_length!r}")
        _check(self.std > 0, f"std must be positive, got {self.std}")
        _check(0 < self.frame_shift_ms <= self.frame_length_ms,
               f"need 0 < frame_shift_ms <= frame_length_ms, got {self.frame_shift_ms} and {self.frame_length_ms}")

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def hop_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def input_samples(self) -> int:
        """Samples that fill `target_length` frames exactly (164080 for 1024 frames at 16 kHz)."""
        return (self.target_length - 1) * self.hop_samples + self.window_samples

    @property
    def duration_s(self) -> float:
        """Audio seconds that fill `target_length` frames exactly (10.255 s for 1024 frames at 16 kHz)."""
        return self.input_samples / self.sample_rate

    def replace(self, **changes: Any) -> FrontendConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        return _from_dict(cls, data)
