"""Training configurations: one frozen `TrainConfig` with its typed parts, and the paper's recipes as factories.

`TrainConfig` nests the configs a run builds its pieces from: `frontend` (a `FrontendConfig`, the model's input),
`augment` (an `AugmentConfig`) and `model` (a `ModelSpec`, the architecture before the data fixes the class
count). Every default of a reference recipe is the value of the current `egs/*/run*.sh` (spec §3.2), so
`make_recipe("audioset-full")` is the reference's full-AudioSet run. `folder` is this project's recipe for a user's
own data; it follows the spec's README guidance (mask 48 of 128 mel bins and ~20 % of the frames, AudioSet
statistics when unsure) and picks the loss from the data (cross-entropy for one label per clip, BCE for several).

Recipes, the command line (`--epochs`, `--target-length`, `--set mixup=0.5`, ...) and old flat JSON name fields
flat; `FLAT_FIELDS` maps each flat name to its place in the nested config, in one place (`TrainConfig.from_dict`).
Configs round-trip through JSON (`to_dict` / `from_dict`), which `ast-audio train --print-config` prints and every
training checkpoint stores. Nothing here imports torch (the command line reads `RECIPES` for its --help).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import (
    DATASET_FRAMES,
    DATASET_STATS,
    MODEL_SIZES,
    STUDENT_SIZES,
    STUDENT_STRIDE,
    ASTConfig,
    FrameHeadConfig,
    FrontendConfig,
)
from ..errors import ConfigError
from .layouts import LAYOUTS

RECIPES = ("audioset-full", "audioset-balanced", "esc50", "speechcommands", "folder", "sed", "distill")
SED_LAYOUT = "sed"  # a folder with strong.tsv (ast_audio.train.sed), read by the sed recipe only
INIT_KINDS = ("none", "imagenet", "audioset", "checkpoint")
SELECTIONS = ("wa", "best", "last")
FINETUNE_MODES = ("full", "linear", "last:N", "lora")
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # the Linear layers of each block: attn.qkv, attn.proj, mlp.fc1, mlp.fc2
ESC50_FOLDS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (the eval loaders of the reference use none of it).

    Args:
        mixup: probability of mixing each clip with a uniformly drawn partner (0.5 AudioSet, 0 ESC-50).
        mixup_alpha: λ ~ Beta(mixup_alpha, mixup_alpha); the reference hard-codes 10.
        freqm: frequency-mask parameter: one mask of floor(U * freqm) mel bins (torchaudio FrequencyMasking).
        timem: time-mask parameter: one mask of floor(U * timem) frames (torchaudio TimeMasking).
        noise: Speech Commands "noise": add rand(T, F) * U / 10 after normalisation, then roll by randint(-10, 10).
    """

    mixup: float = 0.0
    mixup_alpha: float = 10.0
    freqm: int = 0
    timem: int = 0
    noise: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.mixup <= 1.0:
            raise ConfigError(f"mixup is a probability in [0, 1], got {self.mixup}")
        if not (self.mixup_alpha > 0 and math.isfinite(self.mixup_alpha)):
            raise ConfigError(f"mixup_alpha must be a positive number (the reference uses 10), got {self.mixup_alpha}")
        for name in ("freqm", "timem"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative integer (mask width parameter), got {value!r}")

    @property
    def active(self) -> bool:
        return self.mixup > 0 or self.freqm > 0 or self.timem > 0 or self.noise


# ASTConfig fields a model trained from scratch (init none) may set beyond its size (e.g. a 32-wide 2-layer test model).
SCRATCH_FIELDS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "fshape", "tshape", "pooling")


@dataclass(frozen=True)
class ModelSpec:
    """The architecture a run trains, before the data fixes the class count and the front end the input size.

    model_size: the reference size ("tiny224", "small224", "base224", "base384"); fstride / tstride: patch strides.
    The other fields (None = from `model_size` / ASTConfig's default) only apply to a model trained from scratch.
    """

    model_size: str = "base384"
    fstride: int = 10
    tstride: int = 10
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    fshape: int | None = None
    tshape: int | None = None
    pooling: str | None = None

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {sorted(MODEL_SIZES)}, got {self.model_size!r}")
        for name in ("fstride", "tstride"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    @property
    def custom(self) -> dict[str, Any]:
        """The from-scratch fields that are set ({} for a reference-size model)."""
        return {name: getattr(self, name) for name in SCRATCH_FIELDS if getattr(self, name) is not None}

    def ast_config(self, frontend: FrontendConfig, num_classes: int) -> ASTConfig:
        """The `ASTConfig` of this architecture for `frontend`'s input (input_tdim = target_length frames,
        input_fdim = num_mel_bins) and `num_classes` outputs."""
        return ASTConfig(model_size=self.model_size, input_fdim=frontend.num_mel_bins,
                         input_tdim=frontend.target_length, fstride=self.fstride, tstride=self.tstride,
                         num_classes=num_classes, **self.custom)


# Flat field name (recipes, command line, `--set`, configs saved before the nesting) -> (part, field of that part).
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{name: ("frontend", name) for name in ("target_length", "mean", "std", "sample_rate", "num_mel_bins")},
    **{name: ("augment", name) for name in ("mixup", "mixup_alpha", "freqm", "timem", "noise")},
    **{name: ("model", name) for name in ("model_size", "fstride", "tstride", *SCRATCH_FIELDS)},
}
_PARTS = {"frontend": FrontendConfig, "augment": AugmentConfig, "model": ModelSpec}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Units: lr per step, epochs, clips per (global) batch, frames.

    Data:
        layout: how `data` is laid out on disk ("audioset", "esc50", "speechcommands", "folder").
        data / eval_data / label_csv: paths as `ast_audio.train.data.load_splits` takes them.
        fold: ESC-50 validation fold (1-5); None runs every fold of `folds` (the reference's 5-fold CV).
        holdout: folder layout without explicit splits: the stratified fraction held out for validation.
    Optimisation (spec §3.1):
        lr, epochs, batch_size (global, over all DDP ranks), warmup (staircase: every `warmup_interval` steps up to
        `warmup_steps`, lr = step / warmup_steps * lr, so lr is 0 for the first 50 steps), lr_scheduler_start /
        _step / _decay (MultiStepLR milestones range(start, 1000, step), stepped after each epoch's validation),
        Adam betas and weight_decay, loss ("bce", "ce" or "auto": ce for single-label data, else bce),
        metric ("map", "acc", "psds1" or "auto"), balanced_sampling (full AudioSet's weighted sampler).
    frame_head: a frame model's head (`FrameHeadConfig`; the sed recipe's), None for a clip model.
    augment: the augmentation (spec §2.2-2.4): mixup, mixup_alpha, freqm, timem, noise (Speech Commands noise +
        roll).
    frontend: the model input (spec §2.1): target_length frames, mean/std of the normalisation, sample_rate,
        num_mel_bins.
    Model selection: "wa" averages the weights of epochs wa_start..wa_end (AudioSet), "best" keeps the best
        validation epoch (and tests it when there is a test split), "last" the final epoch.
    Model: init ("none", "imagenet[:PATH]", "audioset[:PATH]", "checkpoint:PATH"); model: model_size,
        fstride/tstride and, for a model trained from scratch, the other `SCRATCH_FIELDS` (e.g. a 32-wide 2-layer
        test model).
    Fine-tuning (ast_audio.train.finetune): finetune "full" (every parameter), "linear" (the head on frozen
        features computed once and cached; no augmentation), "last:N" (the last N blocks, the final norm and the
        head), "lora" (LoRA adapters of rank `lora_rank` on the `lora_targets` layers of every block, and the head;
        merged into the saved model; `save_adapters` also writes them alone to out/adapters/).
    patience: early stopping: stop when the main validation metric has not improved for this many epochs (None:
        never).
    scale_augment: folder recipe: scale the frequency/time masks down for few clips per class (below 50).
    time_budget_s: warn once when training has run longer than this many seconds; it never stops training (the
        model must be the same on a busy machine as on an idle one); None: no warning.
    Run: seed, device ("auto" = cuda if available else cpu), num_workers (DataLoader processes per rank),
        eval_batch_factor (the reference evaluates with twice the batch), max_bad_batches (an epoch fails after
        this many batches with no readable clip), deterministic (torch.use_deterministic_algorithms), tensorboard,
        progress (tqdm bar on stderr).
    """

    recipe: str = "folder"
    layout: str = "folder"
    data: str | None = None
    eval_data: str | None = None
    label_csv: str | None = None
    fold: int | None = None
    folds: tuple[int, ...] = ()
    holdout: float = 0.2

    lr: float = 1e-4
    epochs: int = 30
    batch_size: int = 32
    warmup: bool = False
    warmup_steps: int = 1000
    warmup_interval: int = 50
    lr_scheduler_start: int = 5
    lr_scheduler_step: int = 1
    lr_scheduler_decay: float = 0.85
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    loss: str = "auto"
    metric: str = "auto"
    balanced_sampling: bool = False

    augment: AugmentConfig = AugmentConfig(freqm=48, timem=205)
    frontend: FrontendConfig = FrontendConfig()

    selection: str = "best"
    wa_start: int = 1
    wa_end: int = 5

    init: str = "none"
    model: ModelSpec = ModelSpec()
    frame_head: FrameHeadConfig | None = None

    time_budget_s: float | None = None

    finetune: str = "full"
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("qkv", "proj")
    save_adapters: bool = False
    patience: int | None = None
    scale_augment: bool = True
    # distill recipe (ast_audio.train.distill): the stored teacher outputs, the student, the mix of labels where the
    # clips have them, the weight of the frame loss, how many stored views to use (None: all)
    logits: str | None = None
    student: str | None = None
    label_weight: float = 0.0
    frame_weight: float = 1.0
    views: int | None = None

    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    eval_batch_factor: int = 2
    max_bad_batches: int = 10
    deterministic: bool = True
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        check(self.layout in (*LAYOUTS, SED_LAYOUT), f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        check((self.layout == SED_LAYOUT) == (self.frame_head is not None),
              "the sed layout trains a frame model (frame_head) and only it does; use --recipe sed")
        check(self.fold is None or (isinstance(self.fold, int) and self.fold >= 1),
              f"fold must be >= 1, got {self.fold}")
        check(0.0 < self.holdout < 1.0, f"holdout is a fraction in (0, 1), got {self.holdout}")
        for part, cls in _PARTS.items():
            check(isinstance(getattr(self, part), cls), f"{part} must be a {cls.__name__}, got "
                  f"{type(getattr(self, part)).__name__}")
        for name in ("epochs", "batch_size", "warmup_steps", "warmup_interval", "lr_scheduler_start",
                     "lr_scheduler_step", "eval_batch_factor", "max_bad_batches"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                  f"{name} must be a positive integer, got {value!r}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(0 < self.lr_scheduler_decay <= 1, f"lr_scheduler_decay must be in (0, 1], got {self.lr_scheduler_decay}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got "
              f"{self.betas}")
        check(self.time_budget_s is None or (isinstance(self.time_budget_s, (int, float)) and self.time_budget_s > 0),
              f"time_budget_s must be a positive number of seconds or null, got {self.time_budget_s!r}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.loss in ("bce", "ce", "auto"), f"loss must be 'bce', 'ce' or 'auto', got {self.loss!r}")
        check(self.metric in ("map", "acc", "psds1", "auto"), f"metric must be 'map', 'acc', 'psds1' or 'auto', got "
              f"{self.metric!r}")
        check(self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        check(1 <= self.wa_start <= self.wa_end, f"need 1 <= wa_start <= wa_end, got {self.wa_start}, {self.wa_end}")
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        parse_finetune(self.finetune)
        check(isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank >= 1,
              f"lora_rank must be a positive integer, got {self.lora_rank!r}")
        check(len(self.lora_targets) > 0 and all(t in LORA_TARGETS for t in self.lora_targets),
              f"lora_targets must be some of {','.join(LORA_TARGETS)}, got {','.join(map(str, self.lora_targets))}")
        check(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
              f"patience must be a positive number of epochs or null, got {self.patience!r}")
        check(self.recipe != "distill" or (bool(self.logits) and bool(self.student)),
              "the distill recipe needs --logits DIR (from `ast-audio distill logits`) and --student "
              "tiny|mini|small|JSON")
        check(0.0 <= self.label_weight <= 1.0, f"label_weight is a fraction in [0, 1], got {self.label_weight}")
        check(self.frame_weight >= 0, f"frame_weight must be >= 0, got {self.frame_weight}")
        check(self.views is None or (isinstance(self.views, int) and self.views >= 1),
              f"views must be a positive number of stored views or null, got {self.views!r}")
        kind, _ = self.init_spec
        check(kind in INIT_KINDS, f"init must be none, imagenet[:PATH], audioset[:PATH] or checkpoint:PATH, got "
              f"{self.init!r}")
        check(kind != "checkpoint" or bool(self.init_spec[1]), "init checkpoint needs a path: checkpoint:PATH")
        check(not self.model.custom or kind == "none", "model_config (a custom width/depth) only applies to a model "
              "trained from scratch (init none); pretrained weights fix the architecture")

    # ------------------------------------------------------------------------------------------------------------
    @property
    def init_spec(self) -> tuple[str, str | None]:
        """("imagenet", "/path/deit.pth"), ("audioset", None), ("none", None), ..."""
        kind, _, path = self.init.partition(":")
        return kind, (path or None)

    @property
    def student_fields(self) -> dict[str, Any]:
        """The distill recipe's `student` as ASTConfig fields (`student_fields`); {} without a student."""
        return student_fields(self.student) if self.student else {}

    @property
    def multi_label(self) -> bool:
        """Whether the model's classes are independent (BCE loss: sigmoid scores) rather than exclusive (cross-entropy:
        softmax scores), after `resolve`. The one derivation of the score rule from the loss."""
        return self.loss == "bce"

    @property
    def main_metric(self) -> str:
        """The column used for model selection: "mAP", "acc" or "psds1" (after `resolve`)."""
        return {"acc": "acc", "psds1": "psds1"}.get(self.metric, "mAP")

    def resolve(self, multi_label: bool) -> TrainConfig:
        """Fill the "auto" loss/metric from the data: single-label -> ce/acc, multi-label -> bce/map."""
        loss = self.loss if self.loss != "auto" else ("bce" if multi_label else "ce")
        metric = self.metric if self.metric != "auto" else ("map" if multi_label else "acc")
        return self.replace(loss=loss, metric=metric)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the run's fields, with `frontend`, `augment` and `model` as nested objects."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["folds"] = list(self.folds)
        data["lora_targets"] = list(self.lora_targets)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A TrainConfig from nested JSON (`to_dict`), flat field names (`FLAT_FIELDS`: recipes, the command line,
        configs saved before the nesting) or a mix; `model_config` (a dict of `SCRATCH_FIELDS`) sets model fields.
        The one place where flat names meet the nested config."""
        values = dict(data)
        parts: dict[str, dict[str, Any]] = {}
        for part in _PARTS:
            given = values.pop(part, None)
            if given is not None and not isinstance(given, Mapping):
                raise ConfigError(f"{part} must be a JSON object of its fields, got {type(given).__name__}")
            parts[part] = dict(given or {})
        scratch = values.pop("model_config", None) or {}
        if not isinstance(scratch, Mapping):
            raise ConfigError(f"model_config must be a JSON object of ASTConfig fields, got {type(scratch).__name__}")
        unknown = sorted(set(scratch) - set(SCRATCH_FIELDS))
        if unknown:
            raise ConfigError(f"model_config fields {unknown} are not allowed; use {list(SCRATCH_FIELDS)}")
        parts["model"].update(scratch)
        for name in [k for k in values if k in FLAT_FIELDS]:
            part, key = FLAT_FIELDS[name]
            parts[part][key] = values.pop(name)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; expected some of "
                              f"{sorted(known | set(FLAT_FIELDS))}")
        if isinstance(values.get("frame_head"), Mapping):  # a nested object in saved configs
            values["frame_head"] = FrameHeadConfig.from_dict(values["frame_head"])
        if isinstance(values.get("lora_targets"), str):  # "qkv,proj" from --set or the command line
            values["lora_targets"] = tuple(t.strip() for t in values["lora_targets"].split(",") if t.strip())
        for name in ("betas", "folds", "lora_targets"):
            if name in values and values[name] is not None:
                values[name] = tuple(values[name])
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in _PARTS}
        for part, cls_ in _PARTS.items():
            try:
                values[part] = dataclasses.replace(defaults[part], **parts[part])
            except TypeError as exc:  # a field the part does not have
                fields = sorted(f.name for f in dataclasses.fields(cls_))
                raise ConfigError(f"unknown {part} field in {sorted(parts[part])}: {exc}; expected some of "
                                  f"{fields}") from None
        return cls(**values)


# ----------------------------------------------------------------------------------------------------------------
# Recipes (spec §3.2)


def _input_of(dataset: str) -> dict[str, Any]:
    """The front-end fields of a reference recipe: its data set's input length and normalisation statistics."""
    mean, std = DATASET_STATS[dataset]
    return dict(target_length=DATASET_FRAMES[dataset], mean=mean, std=std)


def _audioset(balanced_set: bool) -> dict[str, Any]:
    common = dict(layout="audioset", batch_size=12, warmup=True, lr_scheduler_decay=0.5, loss="bce", metric="map",
                  mixup=0.5, freqm=48, timem=192, noise=False, **_input_of("audioset"), selection="wa",
                  init="imagenet")
    if balanced_set:
        return dict(common, recipe="audioset-balanced", lr=5e-5, epochs=25, lr_scheduler_start=10,
                    lr_scheduler_step=5, balanced_sampling=False, wa_start=6, wa_end=25)
    return dict(common, recipe="audioset-full", lr=1e-5, epochs=5, lr_scheduler_start=2, lr_scheduler_step=1,
                balanced_sampling=True, wa_start=1, wa_end=5)


def recipe_defaults(name: str) -> dict[str, Any]:
    """The fields a recipe sets (before user overrides); everything else keeps the TrainConfig default."""
    if name == "audioset-full":
        return _audioset(balanced_set=False)
    if name == "audioset-balanced":
        return _audioset(balanced_set=True)
    if name == "esc50":
        # lr 1e-5 with AudioSet pretraining; `make_recipe` switches to 1e-4 when that is turned off (spec §3.2).
        return dict(recipe="esc50", layout="esc50", lr=1e-5, epochs=25, batch_size=48, warmup=False,
                    lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85, loss="ce", metric="acc",
                    balanced_sampling=False, mixup=0.0, freqm=24, timem=96, noise=False, **_input_of("esc50"),
                    selection="best", folds=ESC50_FOLDS, init="audioset")
    if name == "speechcommands":
        # mixup 0.6 is the recipe's value; the released log ran with 0.5 (spec §2.2, §7.8).
        return dict(recipe="speechcommands", layout="speechcommands", lr=2.5e-4, epochs=30, batch_size=128,
                    warmup=False, lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85, loss="bce",
                    metric="acc", balanced_sampling=False, mixup=0.6, freqm=48, timem=48, noise=True,
                    **_input_of("speechcommands"), selection="best", init="imagenet")
    if name == "folder":
        # A user's own data: the ESC-50/SC schedule shape, loss from the data, README mask guidance.
        return dict(recipe="folder", layout="folder", lr=1e-4, epochs=30, batch_size=32, warmup=False,
                    lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85, loss="auto", metric="auto",
                    balanced_sampling=False, mixup=0.0, freqm=48, noise=False,
                    **_input_of("audioset"), selection="best", init="none")
    if name == "sed":
        # Sound event detection (issue 20): a frame head on AST, strong (and weak) labels, selection on PSDS1. Time
        # masks of at most 20 frames (0.2 s) keep the targets under them true (ast_audio.train.sed).
        return dict(recipe="sed", layout=SED_LAYOUT, lr=1e-4, epochs=30, batch_size=16, warmup=False,
                    lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85, loss="bce", metric="psds1",
                    balanced_sampling=False, mixup=0.5, freqm=48, timem=20, noise=False, **_input_of("audioset"),
                    selection="best", init="audioset", frame_head=FrameHeadConfig())
    if name == "distill":
        # A student on stored teacher outputs (CED): the views carry the augmentation, so no masks or mixup here;
        # the input comes from the teacher (`make_recipe`). Adam at 5e-4, decay from epoch 10.
        return dict(recipe="distill", layout="folder", lr=5e-4, epochs=30, batch_size=32, warmup=False,
                    lr_scheduler_start=10, lr_scheduler_step=1, lr_scheduler_decay=0.9, loss="auto", metric="map",
                    balanced_sampling=False, mixup=0.0, freqm=0, timem=0, noise=False, selection="best",
                    init="none", scale_augment=False)
    raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")


def make_recipe(name: str, **overrides: Any) -> TrainConfig:
    """The recipe `name` with `overrides` (TrainConfig fields) applied.

    Derived defaults that follow an override unless it is given explicitly:
    - esc50: lr 1e-4 instead of 1e-5 when the initialisation is not AudioSet (spec §3.2, "1e-4 if AudioSet
      pretraining is off");
    - folder: timem = 20 % of target_length, freqm = 48/128 of num_mel_bins (the spec's README guidance).
    """
    values = recipe_defaults(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values.update(overrides)
    if name == "esc50" and "lr" not in overrides and str(values.get("init", "")).partition(":")[0] != "audioset":
        values["lr"] = 1e-4
    if name == "distill":
        values.update(_distill_input(values.get("logits"), values.get("student")))
    if name == "folder":
        values.setdefault("num_mel_bins", FrontendConfig.num_mel_bins)
        if "timem" not in overrides:
            values["timem"] = max(round(0.2 * values["target_length"]), 0)
        if "freqm" not in overrides:
            values["freqm"] = round(48 * values["num_mel_bins"] / 128)
    return TrainConfig.from_dict(values)


# Fields a --student JSON may set: the width and patches (`SCRATCH_FIELDS`), the size and strides, 64 mel bins
# (input_fdim), the frame head (null: a clip student). The rest (input length, front end, labels) is the teacher's.
STUDENT_FIELDS = ("model_size", "fstride", "tstride", "input_fdim", "frame_head", *SCRATCH_FIELDS)


def student_fields(student: str) -> dict[str, Any]:
    """--student tiny|mini|small (`STUDENT_SIZES`, 16x16 patches at stride 16) or a JSON object of
    `STUDENT_FIELDS` (strides 16 unless given) -> ASTConfig fields."""
    if student in STUDENT_SIZES:
        return {"model_size": STUDENT_SIZES[student], "fstride": STUDENT_STRIDE, "tstride": STUDENT_STRIDE}
    try:
        given = json.loads(student)
    except json.JSONDecodeError:
        given = None
    if not isinstance(given, dict):
        raise ConfigError(f"--student must be one of {', '.join(STUDENT_SIZES)} or a JSON object of ASTConfig fields "
                          f"such as '{{\"embed_dim\": 128, \"depth\": 6, \"num_heads\": 4}}', got {student!r}")
    unknown = sorted(set(given) - set(STUDENT_FIELDS))
    if unknown:
        raise ConfigError(f"--student fields {unknown} are not allowed (the input length, front end and labels come "
                          f"from the teacher); use some of {list(STUDENT_FIELDS)}")
    return {"fstride": STUDENT_STRIDE, "tstride": STUDENT_STRIDE, **given}


def _distill_input(logits: str | None, student: str | None) -> dict[str, Any]:
    """The distill recipe's front end (the teacher's, from the logits index; mel bins from the student's
    input_fdim) and model fields (from the student)."""
    if not logits or not student:
        raise ConfigError("the distill recipe needs --logits DIR (from `ast-audio distill logits`) and --student "
                          "tiny|mini|small|JSON")
    from .logits import read_logits_index  # numpy: only when the recipe is made

    fields = student_fields(student)
    frontend = dict(read_logits_index(logits)["frontend"])
    if "input_fdim" in fields:
        frontend["num_mel_bins"] = fields["input_fdim"]
    model = {k: v for k, v in fields.items() if k in ("model_size", "fstride", "tstride")}
    model.setdefault("model_size", "tiny224" if "embed_dim" in fields else "base384")
    scratch = {k: v for k, v in fields.items() if k in SCRATCH_FIELDS}
    return {"frontend": frontend, **model, **({"model_config": scratch} if scratch else {})}


def parse_finetune(text: str) -> tuple[str, int | None]:
    """"full" | "linear" | "lora" | "last:N" -> (mode, N or None); ConfigError otherwise."""
    mode, sep, count = str(text).partition(":")
    if mode in ("full", "linear", "lora") and not sep:
        return mode, None
    if mode == "last" and count.isdigit() and int(count) >= 1:
        return mode, int(count)
    raise ConfigError(f"finetune must be full, linear, lora or last:N (N >= 1 blocks), got {text!r}")


def milestones(config: TrainConfig) -> list[int]:
    """MultiStepLR milestones of the reference: range(start, 1000, step)."""
    return list(range(config.lr_scheduler_start, 1000, config.lr_scheduler_step))
