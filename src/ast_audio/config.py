"""Frozen, typed configurations saved with every checkpoint, and the rules they imply.

`ASTConfig` describes the network (field names follow the reference `ASTModel` arguments);
`FrontendConfig` describes how a waveform becomes the network's input. Both round-trip through JSON.
The one home of the patch-grid formula (`grid_size`), of the data sets' normalisation statistics
(`DATASET_STATS`, `default_frontend`) and of the rule that a front end must fill the model's input exactly
(`check_input_sizes`: target_length = input_tdim frames, num_mel_bins = input_fdim bins).

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
from typing import Any, Literal

from .errors import ConfigError

# Reference model sizes (spec §1.1): embed dim, heads, depth, ImageNet grid side.
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny224": (192, 3, 12, 14),
    "small224": (384, 6, 12, 14),
    "base224": (768, 12, 12, 14),
    "base384": (768, 12, 12, 24),
}
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
        pooling "tokens" or "mean"; and at most 1e9 parameters in all (`num_parameters`, 4 GB in float32).
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
        against real models): patch conv, two prefix tokens, pos-embed, `depth` blocks, final norm, head."""
        dim, hidden, classes = self.embed_dim, int(self.embed_dim * self.mlp_ratio), self.num_classes
        patch = dim * self.fshape * self.tshape + dim  # conv weight (D, 1, fshape, tshape) + bias
        tokens = 2 * dim + (self.num_patches + 2) * dim  # cls, dist, pos_embed (1, P + N, D)
        block = (2 * dim  # norm1
                 + 3 * dim * dim + 3 * dim  # qkv
                 + dim * dim + dim  # proj
                 + 2 * dim  # norm2
                 + dim * hidden + hidden  # fc1
                 + hidden * dim + dim)  # fc2
        head = 2 * dim + 2 * dim + dim * classes + classes  # final norm, head LayerNorm, head Linear
        return patch + tokens + self.depth * block + head

    @property
    def imagenet_grid(self) -> int | None:
        """Side of the square patch grid of the ImageNet model this size comes from (24 for base384; None for a
        custom size)."""
        return MODEL_SIZES[self.model_size][3] if self.model_size in MODEL_SIZES else None

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

    Allowed values (checked on construction, ConfigError otherwise):
        sample_rate 1000..384000 Hz (an int); num_mel_bins 1..1024; target_length 1..65536 frames;
        mean a finite number in [-1000, 1000], std in [0.001, 1000] (log-mel statistics are O(1..10));
        frame_length_ms in (0, 1000] giving a window of 16..16384 samples at `sample_rate` (25 ms = 400 at 16 kHz);
        frame_shift_ms in (0, frame_length_ms] giving a hop of at least one sample.
    """

    sample_rate: int = 16000
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


def default_frontend(config: ASTConfig, sample_rate: int = 16000) -> FrontendConfig:
    """The reference recipe's front end for this model input: the statistics of the data set whose recipe uses
    `config.input_tdim` frames (`DATASET_FRAMES`: Speech Commands for 128, ESC-50 for 512), else AudioSet's."""
    dataset = next((name for name, frames in DATASET_FRAMES.items() if frames == config.input_tdim), "audioset")
    mean, std = DATASET_STATS[dataset]
    return FrontendConfig(sample_rate=sample_rate, num_mel_bins=config.input_fdim, target_length=config.input_tdim,
                          mean=mean, std=std)
