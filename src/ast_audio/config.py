"""Frozen, typed configurations saved with every checkpoint, and the rules they imply.

`ASTConfig` describes the network (field names follow the reference `ASTModel` arguments);
`FrontendConfig` describes how a waveform becomes the network's input. Both round-trip through JSON.
The one home of the patch-grid formula (`grid_size`), of the data sets' normalisation statistics
(`DATASET_STATS`, `default_frontend`), of the rule that a front end must fill the model's input exactly
(`check_input_sizes`: target_length = input_tdim frames, num_mel_bins = input_fdim bins), and of the frame
timeline of a frame model (`FrameHeadConfig`, `column_span`: which seconds time column j of the patch grid scores).

Both validate every field on construction (type and range), because they are read from checkpoint files that
may be broken or crafted: a config must be refused in one line naming the field, its value and the allowed
range *before* anything is allocated from it (an `embed_dim` of 65536 would ask for 51 GB). The bounds below are
generous for real use; each is documented where it is defined.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import ConfigError

# The rate every AST checkpoint was trained at, and so the default everywhere audio is decoded, resampled or stored.
SAMPLE_RATE: Final = 16000

# Model sizes: embed dim, heads, depth, ImageNet grid side. The reference sizes (spec §1.1) and "mini256", the width
# between DeiT-tiny and DeiT-small of CED's ViT-Mini student (no ImageNet model has it: its side is that of the others
# of width <= 384, for a 256-wide ViT checkpoint a user brings).
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny224": (192, 3, 12, 14),
    "mini256": (256, 4, 12, 14),
    "small224": (384, 6, 12, 14),
    "base224": (768, 12, 12, 14),
    "base384": (768, 12, 12, 24),
}
# Distillation students (issue 22; CED's ViT Tiny/Mini/Small: 5.5/9.6/22 M parameters on 527 classes): name -> the
# MODEL_SIZES entry of their width, heads and depth, with non-overlapping 16x16 patches (`STUDENT_STRIDE`): 512
# tokens per 1024 x 128 input (248 at 64 mel bins and 10 s) instead of AST's 1212. A student built from one stores
# that size in `ASTConfig.model_size` ("tiny224", "mini256", "small224").
STUDENT_SIZES: dict[str, str] = {"tiny": "tiny224", "mini": "mini256", "small": "small224"}
STUDENT_STRIDE = 16
# `ASTConfig.model_size` of a width / head count / depth that is none of the MODEL_SIZES (a small test or demo model).
CUSTOM_SIZE = "custom"

# Dataset normalisation statistics of the reference recipes (spec §2.1), computed with augmentation on.
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
ESC50_MEAN, ESC50_STD = -6.6268077, 5.358466
SPEECHCOMMANDS_MEAN, SPEECHCOMMANDS_STD = -6.845978, 5.5654526
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (AUDIOSET_MEAN, AUDIOSET_STD),
    "esc50": (ESC50_MEAN, ESC50_STD),
    "speechcommands": (SPEECHCOMMANDS_MEAN, SPEECHCOMMANDS_STD),
}
# Input frames of each reference recipe (spec §3.2): a checkpoint that stores no front end (a reference .pth, a
# transformers folder, ImageNet weights) gets the statistics of the recipe with its input length, else AudioSet's.
DATASET_FRAMES: dict[str, int] = {"audioset": 1024, "esc50": 512, "speechcommands": 128}

# Upper bounds of the configs, ~10x beyond anything real (AST-base: 768 wide, 12 deep, 12 heads, mlp_ratio 4,
# 1024 frames x 128 mel bins, 527 classes, 86.6 M parameters). They exist so that a crafted checkpoint cannot make
# loading allocate or loop without end.
MAX_EMBED_DIM = 8192  # ViT-G is 1664 wide, GPT-3 12288: 8192 is the widest plausible audio transformer
MAX_DEPTH = 128  # ViT-G has 48 blocks
MAX_MLP_RATIO = 16.0  # ViT/DeiT use 4
MAX_FRAMES = 65536  # input_tdim / target_length: 655 s (~11 min) at the 10 ms hop; long audio is windowed anyway
MAX_MEL_BINS = 1024  # input_fdim / num_mel_bins: 8x the reference's 128
MAX_CLASSES = 100_000  # AudioSet has 527, the largest public tagging vocabularies a few thousand
MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights; AST-base has 86.6 M
# Front end: sample rates from telephone-band audio up to 384 kHz studio formats.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
# Analysis window in samples: at least 16 (an FFT that still has bins), at most 16384 (25 ms at 384 kHz fits; a
# longer window's mel matrix alone would take hundreds of MB).
MIN_WINDOW_SAMPLES, MAX_WINDOW_SAMPLES = 16, 16384
MAX_FRAME_MS = 1000.0  # frame_length_ms; the window bound above is the real limit at each rate
# Log-mel statistics: real ones are mean -16..18, std 1..20 (natural-log power of audio in [-1, 1]); a std near 0
# or a huge mean would scale the model input to overflowing values.
MAX_ABS_MEAN = 1000.0
MIN_STD, MAX_STD = 1e-3, 1000.0
# LayerNorm eps: the reference uses 1e-6 / 1e-5, transformers 1e-12; 0 divides by zero on constant tokens.
MAX_NORM_EPS = 1.0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def short_repr(value: Any) -> str:
    """A short repr for error messages (a crafted value may be a megabyte of text, or an int too long to print)."""
    try:
        text = repr(value)
    except Exception:  # ints beyond sys.get_int_max_str_digits, deeply nested lists
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(name: str, value: Any, low: int, high: int, unit: str = "") -> int:
    """`value` as an int if it is an integer (not a bool) in [low, high], else a one-line ConfigError naming
    `name`, the value and the range. The one home for integer field checks (configs and checkpoint readers)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if is_int and low <= value <= high:
        return int(value)
    got = short_repr(value) if is_int else f"{type(value).__name__} {short_repr(value)}"
    raise ConfigError(f"{name} must be an integer in {low}..{high}{unit}, got {got}")


def check_float(name: str, value: Any, low: float, high: float, unit: str = "", low_open: bool = False) -> float:
    """`value` as a float if it is a finite real number (int or float, not a bool) in [low, high] (or (low, high]
    with `low_open`), else a one-line ConfigError naming `name`, the value and the range."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if real:
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range (JSON allows any number of digits)
            number = math.inf
        if math.isfinite(number) and (low < number if low_open else low <= number) and number <= high:
            return number
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    got = short_repr(value) if real else f"{type(value).__name__} {short_repr(value)}"
    raise ConfigError(f"{name} must be a finite number in {interval}{unit}, got {got}")


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """`value` if it is one of the strings `choices`, else a one-line ConfigError."""
    _check(isinstance(value, str) and value in choices,
           f"{name} must be one of {list(choices)}, got {short_repr(value)}")
    return value


def grid_size(input_fdim: int, input_tdim: int, fshape: int = 16, tshape: int = 16,
              fstride: int = 10, tstride: int = 10) -> tuple[int, int]:
    """(f_dim, t_dim) of the overlapping patch grid: floor((n - kernel) / stride) + 1 per axis.

    This is what the reference's throw-away conv (`get_shape`) computes: 12 x 101 for 128 x 1024 at stride 10.
    The one home of the formula (configs, checkpoint readers and weight surgery all call it).
    """
    if fshape > input_fdim or tshape > input_tdim:
        raise ConfigError(f"patch {fshape}x{tshape} does not fit input {input_fdim}x{input_tdim} (mel bins x frames)")
    return (input_fdim - fshape) // fstride + 1, (input_tdim - tshape) // tstride + 1


def column_hop_samples(config: ASTConfig, frontend: FrontendConfig) -> int:
    """Samples between the starts of two neighbouring time columns of the patch grid: tstride Kaldi frame shifts
    (1600 = 0.1 s for AST at 16 kHz). `column_span` is the rule; this is its step in samples."""
    return config.tstride * frontend.hop_samples


def column_span(config: ASTConfig, frontend: FrontendConfig, j: int) -> tuple[float, float]:
    """(start, end) in seconds of time column `j` of the patch grid, for a model input (window) starting at 0 s.

    The one definition of the frame timeline of a frame model (`FrameHeadConfig`); frame scores, their stitching
    over long files (`ast_audio.infer.frames`) and frame targets all use it.

    Column j is the patch conv's output at time step j: it sees Kaldi frames j*tstride .. j*tstride + tshape - 1,
    and frame k covers samples [k*hop, k*hop + window) (snip_edges: frame 0 starts at sample 0). So column j sees
    samples [j*tstride*hop, (j*tstride + tshape - 1)*hop + window): 0.175 s from j * 0.1 s for AST (tstride 10,
    tshape 16, 10 ms hop, 25 ms window). Neighbouring columns' views overlap; the span given to column j is the
    part of the timeline from where its view starts to where the next column's view starts:

        [j * tstride * hop, (j + 1) * tstride * hop) / sample_rate   (AST at 16 kHz: [0.1 j, 0.1 j + 0.1) s)

    i.e. column j owns Kaldi frames j*tstride .. (j+1)*tstride - 1 (frames 10j..10j+9 for AST: the first tstride
    frames of its view). The spans tile the timeline with no gap or overlap, so columns of windows that start on a
    multiple of the column hop (`column_hop_samples`) lie on one gapless grid. The step is counted in samples
    (tstride x the front end's integer hop), so a rate whose 10 ms is not a whole number of samples keeps one
    exact grid.

    The last time column of a model input (j = t_dim - 1) spans [(t_dim - 1) * 0.1, t_dim * 0.1) = [10.0, 10.1) s
    for AST's 1024 frames; the input's later frames (from t_dim * tstride on: 1010..1023, the rest of its 10.255 s)
    belong to no column's span (the next window's first column owns them). Over a file whose length is not a
    multiple of the column hop, the last column is partial: it spans from its start to the file's end, and its
    view reaches past the end into frames the front end pads (zero log-mel, as `FeatureExtractor` pads).
    """
    hop = column_hop_samples(config, frontend)
    rate = frontend.sample_rate
    return j * hop / rate, (j + 1) * hop / rate


def _from_dict(cls: type, data: Any):
    """`cls(**data)` for a JSON object `data`; anything else (null, a list, unknown keys) is a ConfigError."""
    _check(isinstance(data, Mapping), f"{cls.__name__} must be a JSON object of its fields, got "
                                      f"{type(data).__name__} {short_repr(data)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    _check(not unknown, f"unknown {cls.__name__} field(s) {short_repr(sorted(map(str, unknown)))}; expected some of "
                        f"{sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


def _set(config: Any, name: str, value: Any) -> None:
    """Store a validated (normalised) value on a frozen dataclass: int 4 -> float 4.0, numpy ints -> int."""
    object.__setattr__(config, name, value)


def _block_parameters(dim: int, hidden: int) -> int:
    """Parameters of one pre-norm transformer `Block` of width `dim` with an MLP of width `hidden`."""
    return (2 * dim  # norm1
            + 3 * dim * dim + 3 * dim  # qkv
            + dim * dim + dim  # proj
            + 2 * dim  # norm2
            + dim * hidden + hidden  # fc1
            + hidden * dim + dim)  # fc2


FREQ_POOLS = ("mean", "attention")
TEMPORAL_MODELS = ("none", "bigru", "transformer")
WEAK_POOLS = ("linear_softmax", "attention")
MAX_TEMPORAL_LAYERS = 4  # the frame-level SED systems use 1-2 (DCASE baseline: 2 BiGRU layers)
TEMPORAL_MLP_RATIO = 4  # MLP width of a temporal transformer layer, x hidden (as the encoder's blocks)


@dataclass(frozen=True)
class FrameHeadConfig:
    """The frame head of an AST: per-time-column class logits read off the patch tokens (sound event detection).

    The encoder's patch tokens form a (frequency, time) grid (`ASTConfig.grid`); for each time column:
    - `freq_pool`: "mean" over its frequency tokens, or "attention": one transformer block (the encoder's width and
      heads) across the column's frequency tokens, then their mean (AST-SED's frequency-wise transformer encoder);
    - a LayerNorm, then `temporal`: "none" (a Linear to the classes per column), "bigru" (`temporal_layers`
      bidirectional GRU layers, `hidden` wide in all, after a Linear to `hidden`) or "transformer"
      (`temporal_layers` pre-norm transformer layers `hidden` wide with `temporal_heads` heads, after a Linear to
      `hidden`, then a LayerNorm), then a Linear to the classes: (B, t_dim, num_classes) frame logits on the timeline of
      `column_span`;
    - `weak_pool`: how frame scores become clip scores for weakly labelled clips: "linear_softmax" (sum p^2 /
      sum p over time per class, the DCASE baseline's) or "attention" (learned weights over time, from a Linear
      map of the frame logits; parameters under `frame_head.weak_attention`).

    Allowed values (checked on construction, ConfigError otherwise): freq_pool "mean" or "attention"; temporal
    "none", "bigru" or "transformer"; temporal_layers 1..4; hidden 1..8192 (even for "bigru": two directions of
    hidden / 2; divisible by temporal_heads for "transformer"); temporal_heads 1..hidden; weak_pool
    "linear_softmax" or "attention".
    """

    freq_pool: Literal["mean", "attention"] = "mean"
    temporal: Literal["none", "bigru", "transformer"] = "bigru"
    temporal_layers: int = 1
    hidden: int = 256
    temporal_heads: int = 4
    weak_pool: Literal["linear_softmax", "attention"] = "linear_softmax"

    def __post_init__(self) -> None:
        check_choice("frame_head.freq_pool", self.freq_pool, FREQ_POOLS)
        check_choice("frame_head.temporal", self.temporal, TEMPORAL_MODELS)
        check_choice("frame_head.weak_pool", self.weak_pool, WEAK_POOLS)
        _set(self, "temporal_layers", check_int("frame_head.temporal_layers", self.temporal_layers, 1,
                                                MAX_TEMPORAL_LAYERS))
        _set(self, "hidden", check_int("frame_head.hidden", self.hidden, 1, MAX_EMBED_DIM))
        _set(self, "temporal_heads", check_int("frame_head.temporal_heads", self.temporal_heads, 1, self.hidden,
                                               " (at most hidden)"))
        _check(self.temporal != "bigru" or self.hidden % 2 == 0,
               f"frame_head.hidden must be even for temporal='bigru' (two directions of hidden / 2), got "
               f"{self.hidden}")
        _check(self.temporal != "transformer" or self.hidden % self.temporal_heads == 0,
               f"frame_head.hidden ({self.hidden}) must be divisible by temporal_heads ({self.temporal_heads}) for "
               "temporal='transformer'")

    def num_parameters(self, embed_dim: int, num_classes: int, mlp_ratio: float) -> int:
        """Parameters of the frame head on an encoder `embed_dim` wide (MLP ratio `mlp_ratio`) for `num_classes`."""
        dim, hidden, classes = embed_dim, self.hidden, num_classes
        count = 2 * dim  # norm
        if self.freq_pool == "attention":
            count += _block_parameters(dim, int(dim * mlp_ratio))
        if self.temporal == "none":
            count += dim * classes + classes  # classifier
        else:
            count += dim * hidden + hidden  # proj
            if self.temporal == "bigru":
                half = hidden // 2  # per direction; every layer's input is `hidden` wide
                count += self.temporal_layers * 2 * 3 * (hidden * half + half * half + 2 * half)
            else:
                count += self.temporal_layers * _block_parameters(hidden, TEMPORAL_MLP_RATIO * hidden)
                count += 2 * hidden  # out_norm
            count += hidden * classes + classes  # classifier
        if self.weak_pool == "attention":
            count += classes * classes + classes  # weak_attention
        return count

    def replace(self, **changes: Any) -> FrameHeadConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameHeadConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ASTConfig:
    """Architecture of an AST.

    `model_size` picks the reference width/heads/depth; `embed_dim`, `depth`, `num_heads` override it
    (for small test or demo models) and are filled in from `model_size` when left as None. The config stores what
    is built: a model whose width, heads or depth differ from its size's becomes `model_size="custom"`
    (`CUSTOM_SIZE`, which needs all three given), so a saved tiny model never claims to be base384; checkpoints saved
    before this say e.g. "base384" with other widths and load as "custom".
    Inputs are (B, T, F) = (batch, input_tdim frames, input_fdim mel bins).

    Allowed values (checked on construction, ConfigError otherwise; integers must be ints, not bools):
        input_fdim 1..1024 (`MAX_MEL_BINS`), input_tdim 1..65536 frames (`MAX_FRAMES`);
        fshape 1..input_fdim, tshape 1..input_tdim (the patch must fit the input);
        fstride 1..input_fdim, tstride 1..input_tdim; num_classes 1..100000;
        embed_dim 1..8192, depth 1..128, num_heads 1..embed_dim dividing embed_dim;
        mlp_ratio in (0, 16] with int(embed_dim * mlp_ratio) >= 1; layer_norm_eps, head_norm_eps in (0, 1];
        pooling "tokens" or "mean"; frame_head None or a `FrameHeadConfig`; and at most 1e9 parameters in all
        (`num_parameters`, 4 GB in float32).

    `frame_head` None is a clip model (one row of logits per input); a `FrameHeadConfig` adds the frame head
    (logits per time column of the patch grid) beside the clip head, which stays, so a frame model still tags.
    `to_dict` leaves `frame_head` out when it is None, so a clip model's config reads as before the field existed.
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
    frame_head: FrameHeadConfig | None = None

    def __post_init__(self) -> None:
        check_choice("model_size", self.model_size, [*sorted(MODEL_SIZES), CUSTOM_SIZE])
        if self.model_size == CUSTOM_SIZE:
            _check(None not in (self.embed_dim, self.num_heads, self.depth),
                   f"model_size {CUSTOM_SIZE!r} needs embed_dim, num_heads and depth; give all three or a size name "
                   f"({', '.join(MODEL_SIZES)})")
        else:
            dim, heads, depth, _ = MODEL_SIZES[self.model_size]
            for name, default in (("embed_dim", dim), ("num_heads", heads), ("depth", depth)):
                if getattr(self, name) is None:
                    _set(self, name, default)
        _set(self, "input_fdim", check_int("input_fdim", self.input_fdim, 1, MAX_MEL_BINS, " mel bins"))
        _set(self, "input_tdim", check_int("input_tdim", self.input_tdim, 1, MAX_FRAMES, " frames"))
        _set(self, "fshape", check_int("fshape", self.fshape, 1, MAX_MEL_BINS))
        _set(self, "tshape", check_int("tshape", self.tshape, 1, MAX_FRAMES))
        _check(self.fshape <= self.input_fdim and self.tshape <= self.input_tdim,
               f"patch {self.fshape}x{self.tshape} does not fit the input {self.input_fdim}x{self.input_tdim} "
               "(mel bins x frames); use a smaller fshape/tshape or a longer input")
        _set(self, "fstride", check_int("fstride", self.fstride, 1, self.input_fdim, " (at most input_fdim)"))
        _set(self, "tstride", check_int("tstride", self.tstride, 1, self.input_tdim, " (at most input_tdim)"))
        _set(self, "num_classes", check_int("num_classes", self.num_classes, 1, MAX_CLASSES))
        _set(self, "embed_dim", check_int("embed_dim", self.embed_dim, 1, MAX_EMBED_DIM))
        _set(self, "depth", check_int("depth", self.depth, 1, MAX_DEPTH, " blocks"))
        _set(self, "num_heads", check_int("num_heads", self.num_heads, 1, self.embed_dim, " (at most embed_dim)"))
        _check(self.embed_dim % self.num_heads == 0,
               f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        check_choice("pooling", self.pooling, ("tokens", "mean"))
        _set(self, "mlp_ratio", check_float("mlp_ratio", self.mlp_ratio, 0.0, MAX_MLP_RATIO, low_open=True))
        _check(int(self.embed_dim * self.mlp_ratio) >= 1,
               f"mlp_ratio {self.mlp_ratio:g} x embed_dim {self.embed_dim} gives an MLP of width 0; use a larger ratio")
        for name in ("layer_norm_eps", "head_norm_eps"):
            _set(self, name, check_float(name, getattr(self, name), 0.0, MAX_NORM_EPS, low_open=True))
        if self.model_size != CUSTOM_SIZE and (self.embed_dim, self.num_heads, self.depth) != \
                MODEL_SIZES[self.model_size][:3]:
            _set(self, "model_size", CUSTOM_SIZE)  # store what is built, not the size it started from
        _check(self.frame_head is None or isinstance(self.frame_head, FrameHeadConfig),
               f"frame_head must be None (a clip model) or a FrameHeadConfig, got {type(self.frame_head).__name__} "
               f"{short_repr(self.frame_head)}")
        count = self.num_parameters
        _check(count <= MAX_PARAMETERS,
               f"this config has {count:.3g} parameters ({count * 4 / 1e9:.3g} GB in float32), more than the "
               f"{MAX_PARAMETERS:.0e} allowed; check embed_dim, depth, mlp_ratio, num_classes and the patch grid")

    @property
    def grid(self) -> tuple[int, int]:
        """(f_dim, t_dim): the patch grid, frequency rows by time columns."""
        return grid_size(self.input_fdim, self.input_tdim, self.fshape, self.tshape, self.fstride, self.tstride)

    @property
    def num_patches(self) -> int:
        f_dim, t_dim = self.grid
        return f_dim * t_dim

    @property
    def num_parameters(self) -> int:
        """Parameters of `AST(self)`, computed without building it (tests/test_hostile_config.py checks the sum
        against real models): patch conv, two prefix tokens, pos-embed, `depth` blocks, final norm, head, and the
        frame head if any."""
        dim, hidden, classes = self.embed_dim, int(self.embed_dim * self.mlp_ratio), self.num_classes
        patch = dim * self.fshape * self.tshape + dim  # conv weight (D, 1, fshape, tshape) + bias
        tokens = 2 * dim + (self.num_patches + 2) * dim  # cls, dist, pos_embed (1, P + N, D)
        head = 2 * dim + 2 * dim + dim * classes + classes  # final norm, head LayerNorm, head Linear
        frames = 0 if self.frame_head is None else self.frame_head.num_parameters(dim, classes, self.mlp_ratio)
        return patch + tokens + self.depth * _block_parameters(dim, hidden) + head + frames

    @property
    def imagenet_grid(self) -> int | None:
        """Side of the square patch grid of the ImageNet model this size comes from (24 for base384; None for a
        custom size)."""
        return MODEL_SIZES[self.model_size][3] if self.model_size in MODEL_SIZES else None

    def replace(self, **changes: Any) -> ASTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types; `frame_head` only for a frame model (a nested object of its fields)."""
        data = dataclasses.asdict(self)
        if self.frame_head is None:
            del data["frame_head"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ASTConfig:
        """The config `to_dict` wrote; a missing or null `frame_head` is a clip model (checkpoints before it)."""
        if isinstance(data, Mapping) and data.get("frame_head") is not None:
            data = {**data, "frame_head": FrameHeadConfig.from_dict(data["frame_head"])}
        return _from_dict(cls, data)


@dataclass(frozen=True)
class FrontendConfig:
    """Waveform -> normalised log-mel input, as the reference dataloader does it (spec §2.1).

    Kaldi fbank at `sample_rate` Hz with `num_mel_bins` bins, zero-padded or cropped to `target_length`
    frames in the log-mel domain, then normalised as (x - mean) / (2 * std).

    Allowed values (checked on construction, ConfigError otherwise):
        sample_rate 1000..384000 Hz (an int); num_mel_bins 1..1024; target_length 1..65536 frames;
        mean a finite number in [-1000, 1000], std in [0.001, 1000] (log-mel statistics are O(1..10));
        frame_length_ms in (0, 1000] giving a window of 16..16384 samples at `sample_rate` (25 ms = 400 at 16 kHz);
        frame_shift_ms in (0, frame_length_ms] giving a hop of at least one sample.
    """

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 128
    target_length: int = 1024
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0

    def __post_init__(self) -> None:
        _set(self, "sample_rate", check_int("sample_rate", self.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, " Hz"))
        _set(self, "num_mel_bins", check_int("num_mel_bins", self.num_mel_bins, 1, MAX_MEL_BINS))
        _set(self, "target_length", check_int("target_length", self.target_length, 1, MAX_FRAMES, " frames"))
        _set(self, "mean", check_float("mean", self.mean, -MAX_ABS_MEAN, MAX_ABS_MEAN))
        _set(self, "std", check_float("std", self.std, MIN_STD, MAX_STD))
        rate = self.sample_rate
        _set(self, "frame_length_ms", check_float("frame_length_ms", self.frame_length_ms, 0.0, MAX_FRAME_MS, " ms",
                                                  low_open=True))
        _check(MIN_WINDOW_SAMPLES <= self.window_samples <= MAX_WINDOW_SAMPLES,
               f"frame_length_ms {self.frame_length_ms:g} gives a {self.window_samples}-sample window at {rate} Hz; "
               f"allowed {MIN_WINDOW_SAMPLES}..{MAX_WINDOW_SAMPLES} samples, i.e. frame_length_ms "
               f"{MIN_WINDOW_SAMPLES * 1000 / rate:.4g}..{MAX_WINDOW_SAMPLES * 1000 / rate:.4g} at this rate")
        _set(self, "frame_shift_ms", check_float("frame_shift_ms", self.frame_shift_ms, 0.0, self.frame_length_ms,
                                                 " ms (at most frame_length_ms)", low_open=True))
        _check(self.hop_samples >= 1,
               f"frame_shift_ms {self.frame_shift_ms:g} gives a hop of 0 samples at {rate} Hz; use at least "
               f"{1000 / rate:g} ms")

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


def check_input_sizes(config: ASTConfig, frontend: FrontendConfig) -> None:
    """ConfigError unless `frontend` fills the model input exactly: target_length == input_tdim frames and
    num_mel_bins == input_fdim bins (the two names of each quantity: the front end's and the reference model's).
    The one check of this rule (the model, the checkpoint reader and the training engine call it)."""
    if (frontend.target_length, frontend.num_mel_bins) != (config.input_tdim, config.input_fdim):
        raise ConfigError(f"the front end gives {frontend.target_length} frames x {frontend.num_mel_bins} mel bins "
                          f"but the model input is {config.input_tdim} x {config.input_fdim} (input_tdim x "
                          "input_fdim); make target_length/num_mel_bins match input_tdim/input_fdim")


def default_frontend(config: ASTConfig, sample_rate: int = SAMPLE_RATE) -> FrontendConfig:
    """The reference recipe's front end for this model input: the statistics of the data set whose recipe uses
    `config.input_tdim` frames (`DATASET_FRAMES`: Speech Commands for 128, ESC-50 for 512), else AudioSet's."""
    dataset = next((name for name, frames in DATASET_FRAMES.items() if frames == config.input_tdim), "audioset")
    mean, std = DATASET_STATS[dataset]
    return FrontendConfig(sample_rate=sample_rate, num_mel_bins=config.input_fdim, target_length=config.input_tdim,
                          mean=mean, std=std)


# ----------------------------------------------------------------------------------------------------------------
# Numeric options a user gives at run time: one range per option, for the command line, the HTTP form and the
# WebSocket's first message alike (`OPTION_RANGES`), so the three cannot drift apart.

# The widest median filter, in windows (or grid pieces). `median_smooth` holds N x C x k scores at once (N windows,
# C classes, k the filter): 99 over the server's 600 windows of 527 classes is 250 MB; real filters are 3 to 31.
MAX_MEDIAN_WINDOWS = 99
# Sample rates of raw PCM sent to `listen` or the WebSocket: telephone audio to 192 kHz studio formats. The floor
# bounds the resampler's growth (a 1 Hz stream resampled to 16 kHz is 16,000 x its own size).
MIN_PCM_RATE, MAX_PCM_RATE = 8000, 192_000
MAX_PCM_CHANNELS = 32
# Event durations and gaps, in seconds: far beyond any recording (11.6 days), finite so no arithmetic overflows.
MAX_EVENT_SECONDS = 1e6


@dataclass(frozen=True)
class NumberRange:
    """The values one numeric option accepts: a finite `kind` (int or float) in [low, high] ((low, high] with
    `low_open`; no bound where None), odd if `odd`. `what` replaces the generated description ("an odd integer in
    [1, 99]") in messages.

    `check` takes a JSON value (a bool, a string or a non-integral float for an int is refused; 3.0 is the integer
    3), `parse` a string (the command line, a form field); both raise a one-line ConfigError naming the option, the
    range and the value."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    odd: bool = False
    what: str | None = None

    def describe(self) -> str:
        if self.what is not None:
            return self.what
        noun = "integer" if self.kind is int else "number"
        article = f"an {'odd ' if self.odd else ''}{noun}" if self.odd or self.kind is int else f"a {noun}"
        if self.low == 0 and self.low_open and self.high is None:
            return f"a positive {noun}"
        if self.low == 1 and self.kind is int and self.high is None and not self.odd:
            return "a positive integer"
        if self.high is None:
            return f"{article} {'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else article
        if self.low is None:
            return f"{article} <= {self.high:g}"
        return f"{article} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def accepts(self, value: int | float) -> bool:
        """Whether a number of the right kind is finite, within the bounds and (if asked) odd."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return low_ok and (self.high is None or value <= self.high) and (not self.odd or value % 2 == 1)

    def check(self, name: str, value: Any) -> int | float:
        """A JSON value -> the option's int or float, or a one-line ConfigError."""
        number: int | float | None = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if self.kind is int:
                if isinstance(value, numbers.Integral):
                    number = int(value)
                elif math.isfinite(value) and float(value).is_integer():
                    number = int(value)
            else:
                try:
                    number = float(value)
                except OverflowError:  # an int beyond float range (JSON allows any number of digits)
                    number = None
        if number is None or not self.accepts(number):
            plain = type(value) in (int, float)
            got = short_repr(value) if plain else f"{type(value).__name__} {short_repr(value)}"
            raise ConfigError(f"{name} must be {self.describe()}, got {got}")
        return number

    def parse(self, name: str, text: str) -> int | float:
        """A string -> the option's int or float, or a one-line ConfigError."""
        try:
            number = self.kind(text.strip())
        except (ValueError, OverflowError):
            number = None
        if number is None or not self.accepts(number):
            raise ConfigError(f"{name} must be {self.describe()}, got {short_repr(text)}")
        return number


POSITIVE_SECONDS = NumberRange(float, low=0, low_open=True)  # window and hop: `infer/windowing.py` adds the rest
OPTION_RANGES: dict[str, NumberRange] = {
    "window_s": POSITIVE_SECONDS,
    "hop_s": POSITIVE_SECONDS,
    "threshold": NumberRange(float, low=0, high=1, what="a number between 0 and 1"),
    "hysteresis": NumberRange(float, low=0, high=1, low_open=True),
    "median": NumberRange(int, low=1, high=MAX_MEDIAN_WINDOWS, odd=True,
                          what=f"an odd number of windows from 1 to {MAX_MEDIAN_WINDOWS}"),
    "min_duration": NumberRange(float, low=0, high=MAX_EVENT_SECONDS),
    "merge_gap": NumberRange(float, low=0, high=MAX_EVENT_SECONDS),
    "top_k": NumberRange(int, low=1, high=MAX_CLASSES),
    "top_n": NumberRange(int, low=1, high=MAX_CLASSES),
    "start_s": NumberRange(float, low=0),
    "rate": NumberRange(int, low=MIN_PCM_RATE, high=MAX_PCM_RATE),
    "channels": NumberRange(int, low=1, high=MAX_PCM_CHANNELS),
}


def check_option(name: str, value: Any) -> int | float:
    """A JSON value of the numeric option `name` (a key of OPTION_RANGES), checked: the WebSocket's first message."""
    return OPTION_RANGES[name].check(name, value)


def parse_option(name: str, text: str) -> int | float:
    """The text of the numeric option `name` (a key of OPTION_RANGES), checked: the CLI and the HTTP form."""
    return OPTION_RANGES[name].parse(name, text)
