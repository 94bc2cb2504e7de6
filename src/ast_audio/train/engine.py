"""The training engine: the reference's `traintest.py` loop (spec §3.1) on DDP, with resumable checkpoints.

One run = `train_run(config, out)`, in named steps: `_load_data` -> `_start` (a fresh model or the resumed
checkpoint, optimiser, scheduler, data loaders) -> epochs of (`_train_epoch`, `_validate` + scheduler step,
`_save_epoch`) -> `_finish` (model selection: weight averaging, best epoch or last) -> `out/model`, a native
checkpoint. `run` adds the ESC-50 five-fold loop and its fold-averaged summary (spec §3.3). The optimisation pieces
are `optim.py`, evaluation and model selection `evaluate.py`, checkpoints for `--resume` `checkpointing.py`, the
other outputs `outputs.py`.

Faithful to the reference: Adam(betas 0.95/0.999, weight decay 5e-7) over one parameter group, staircase warm-up
(lr = step/1000 * lr every 50 steps up to step 1000, so lr = 0 for the first 50 steps), MultiStepLR milestones
range(start, 1000, step) stepped once per epoch after validation, BCE-with-logits or cross-entropy, the
running-mean ("cum") ensemble of per-epoch predictions, weight averaging of a range of epochs.

Fixed where the reference is broken (spec §2.2, §3.1): cross-entropy takes the soft mixup targets (the reference
truncates them with `.long()`), and the validation loss is computed on logits (the reference applies the loss to
sigmoid outputs). Not in the reference: seeds and deterministic algorithms, DistributedDataParallel instead of
DataParallel, bf16/fp16 autocast choice, checkpoints that resume a killed run to the same weights.

Outputs in `out/`: metrics.csv (one row per epoch), checkpoint/ (last epoch: model + train_state.pt), model/ (the
selected model), models/epoch_N/ (epochs kept for weight averaging), best/ (best epoch so far, for selection
"best"), result.json, curves.png, tb/ (TensorBoard events), bad_clips.txt (if any clip was unreadable).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import AstAudioError, ConfigError, OutputError
from ..labels import match_classes
from ..model import AST
from ..utils import atomic_write_text, backup_path
from ..weights.adapt import HEAD_KEYS, remap_head
from ..weights.checkpoint import load_model, save_model
from ..weights.hub import DEFAULT_MODEL
from . import checkpointing as C
from . import dist as D
from . import distill as DI
from . import finetune as FT
from . import metrics as M
from .data import ClipDataset, collate
from .evaluate import epoch_row, predict, progress_bar, select_model
from .layouts import FEW_CLIPS, Splits, load_splits
from .optim import (
    autocast_dtype,
    loss_function,
    make_optimizer,
    make_scheduler,
    seed_everything,
    set_lr,
    warmup_lr,
)
from .outputs import format_row, metrics_csv, tensorboard_writer, write_epoch_outputs, write_json
from .recipes import ESC50_FOLDS, SED_LAYOUT, TrainConfig
from .sampler import EpochSampler, balanced_weights, balanced_weights_from_targets
from .sed import (
    SedData,
    SedDataset,
    SedForward,
    balanced_sed_weights,
    load_sed_folder,
    sed_collate,
    sed_loss,
    sed_manifest,
    validation_psds1,
    with_frame_head,
)
from .shards import ShardClips, ShardDataset, is_shard_folder, read_index

Printer = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# The model a run starts from


def build_model(config: TrainConfig, labels: Sequence[str], multi_label: bool) -> AST:
    """The model `config.init` asks for, sized to the data: ImageNet / AudioSet adaptation (spec §1.4, §1.5),
    a checkpoint to continue from, or random init (seeded by `config.seed`).

    AudioSet initialisation always gets a new head, even for 527 classes (spec §1.5); `checkpoint:` keeps the trained
    head row of every class it shares with the data, matched by name in any order (`match_classes`, `remap_head`),
    and starts fresh rows for the data's other classes.
    """
    if config.recipe == "distill":  # a student: its size from --student, its input and classes from the teacher
        return DI.build_student(config, labels, multi_label)
    kind, path = config.init_spec
    frontend, spec = config.frontend, config.model
    num_classes = len(labels)
    torch.manual_seed(config.seed)  # the new head / random init depend on the seed only
    if kind == "none":
        return AST(spec.ast_config(frontend, num_classes), frontend=frontend, labels=list(labels),
                   multi_label=multi_label)
    inputs = dict(input_fdim=frontend.num_mel_bins, input_tdim=frontend.target_length, fstride=spec.fstride,
                  tstride=spec.tstride, multi_label=multi_label, frontend=frontend)
    if kind == "checkpoint":  # its own head and names first, then its rows matched to the data's classes by name
        model = load_model(path, **inputs)
        rows = match_classes(labels, model.labels, data_where="the training data", model_where=f"checkpoint {path}",
                             allow_new=True)
        return remap_head(model, labels, rows).train()
    common = dict(inputs, num_classes=num_classes, labels=list(labels))
    if kind == "imagenet":
        if path is None:
            raise ConfigError(f"recipe {config.recipe!r} starts from ImageNet weights: pass --init imagenet:PATH (a "
                              "timm/DeiT checkpoint, e.g. deit_base_distilled_patch16_384 .pth/.safetensors) or "
                              "--init none to train from scratch")
        model = load_model(path, model_size=spec.model_size, **common)
    else:  # audioset
        model = load_model(path or DEFAULT_MODEL, **common)
        if model.config.num_classes == num_classes:
            fresh = AST(model.config, frontend=model.frontend, labels=model.labels, multi_label=multi_label)
            state = model.state_dict()
            state.update({k: v for k, v in fresh.state_dict().items() if k in HEAD_KEYS})
            model.load_state_dict(state)
    return model.train()


# ----------------------------------------------------------------------------------------------------------------
# Shards and the best epoch


def _shard_index(config: TrainConfig) -> dict[str, Any] | None:
    """index.json of `config.data` if it is a shard folder written by `ast-audio prepare`, else None."""
    if config.data is None or not is_shard_folder(config.data):
        return None
    return read_index(config.data)


def _shard_splits(config: TrainConfig, index: dict[str, Any]):
    """Validation set of a shard-trained run: --eval-data as files (the whole of it: it is the evaluation set)."""
    if config.eval_data is None:
        raise ConfigError(f"{config.data} holds training shards: give the validation set with --eval-data (an "
                          "AudioSet JSON datafile, or a folder/manifest of files)")
    whole = load_splits(config.layout, config.eval_data, fold=config.fold, eval_data=config.eval_data,
                        label_csv=config.label_csv, holdout=config.holdout, seed=config.seed)
    if tuple(whole.valid.labels) != tuple(index["labels"]):
        raise ConfigError(f"{config.eval_data}: its labels differ from those of the shards in {config.data}; "
                          "prepare the shards and the validation set with the same label CSV")
    return Splits(train=whole.valid, valid=whole.valid, test=None)


def _is_best(rows: list[dict[str, Any]], config: TrainConfig) -> bool:
    """Is the last row the best so far by the main metric (ties keep the earlier epoch)?"""
    key = config.main_metric
    values = [r[key] if math.isfinite(r[key]) else -math.inf for r in rows]
    return values[-1] > max(values[:-1], default=-math.inf) or len(values) == 1


# ----------------------------------------------------------------------------------------------------------------
# One training run


@dataclass
class RunResult:
    """What a run produced: per-epoch rows, the selected model's folder and its metrics."""

    out: Path
    rows: list[dict[str, Any]]
    model_dir: Path | None
    selection: dict[str, Any]


@dataclass
class _Data:
    """The run's clips: train/valid(/test) manifests (or, for tar shards, the shard index), labels, multi_label."""

    splits: Splits
    labels: tuple[str, ...]
    multi_label: bool
    shard_index: dict[str, Any] | None
    sed: SedData | None = None  # the sed recipe's clips (strong, weak, background; validation)
    distill: DI.DistillData | None = None  # the distill recipe's stored teacher outputs


@dataclass
class _Run:
    """The state one training run carries from step to step."""

    config: TrainConfig
    out: Path
    info: D.DistInfo
    say: Printer
    model: AST
    net: torch.nn.Module  # the model, wrapped in DistributedDataParallel when several processes train
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler | None
    amp: torch.dtype | None
    train_data: Any  # ClipDataset, ShardDataset or ShardClips
    sampler: EpochSampler | None
    loader: torch.utils.data.DataLoader
    valid_data: ClipDataset
    num_classes: int
    start_epoch: int = 1
    global_step: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    cum_sum: torch.Tensor | None = None  # (N valid, C) running sum of per-epoch scores (the "cum" ensemble)
    cum_count: torch.Tensor | None = None  # (N valid,)
    writer: Any = None  # TensorBoard SummaryWriter on the main rank
    bad_log: list[str] = field(default_factory=list)
    plan: FT.Plan | None = None  # what the fine-tuning mode trains
    step_s: float = 0.0  # mean seconds of a training step (forward, backward, update) in the last epoch
    sed_valid: SedDataset | None = None  # the sed recipe's validation files (whole, for PSDS1)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def per_rank(self) -> int:
        return self.config.batch_size // self.info.world_size


def train_run(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False, printer: Printer = _stderr,
              info: D.DistInfo | None = None) -> RunResult:
    """Train one model (one ESC-50 fold, or one whole AudioSet / Speech Commands / folder run) into `out`."""
    out = Path(out)
    info = info or D.setup(config.device)
    say: Printer = printer if info.is_main else (lambda _msg: None)
    taken = D.broadcast_object(info, (out / "model").exists() or (out / "checkpoint").exists()
                               or backup_path(out / "checkpoint").exists())  # rank 0's view, for all
    if taken and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it, --force to start over, "
                          "or choose another -o/--output")
    config, data = _load_data(config, info)
    config, notes = _fit_to_data(config, data)
    for note in notes:
        say(note)
    run = _start(config, data, out, resume, info, say)
    budget, began, warned = run.config.time_budget_s, time.perf_counter(), False
    for epoch in range(run.start_epoch, run.config.epochs + 1):
        started = time.perf_counter()
        train_loss, skipped = _train_epoch(run, epoch)
        row = _validate(run, epoch, train_loss, skipped, started)
        if info.is_main:
            _save_epoch(run, epoch, row)
        D.barrier(info)
        if budget is not None and not warned and time.perf_counter() - began > budget:
            # A budget never stops training: the model must not depend on how busy the machine is.
            say(f"warning: training has taken over its time budget of {budget:g} s after epoch {epoch}; it runs "
                f"all {run.config.epochs} epochs all the same (lower --epochs for a shorter run)")
            warned = True
        if _stale(run.rows, run.config) and epoch < run.config.epochs:
            say(f"early stopping: no better {run.config.main_metric} for {run.config.patience} epochs")
            break
    return _finish(run, data)


def _load_data(config: TrainConfig, info: D.DistInfo) -> tuple[TrainConfig, _Data]:
    """The manifests (or shard index) of the run's data, and the config resolved for it (loss and metric from
    whether clips have one label or several)."""
    if config.layout == SED_LAYOUT:
        if config.data is None:
            raise ConfigError("the sed recipe needs --data FOLDER (audio with strong.tsv; docs/training-data.md)")
        sed = load_sed_folder(config.data, holdout=config.holdout, seed=config.seed)
        splits = Splits(train=sed_manifest(sed.train, sed.labels), valid=sed_manifest(sed.valid, sed.labels),
                        test=None)
        return config.resolve(True), _Data(splits, sed.labels, True, None, sed)
    if config.recipe == "distill":
        distilled = DI.distill_splits(config)
        return config.resolve(distilled.multi_label), _Data(distilled.splits, distilled.labels, distilled.multi_label,
                                                            None, distill=distilled)
    shard_index = _shard_index(config)
    if shard_index is None:
        splits = load_splits(config.layout, config.data, fold=config.fold, eval_data=config.eval_data,
                             label_csv=config.label_csv, holdout=config.holdout, seed=config.seed)
        labels, multi_label = splits.train.labels, splits.train.multi_label
    else:
        splits = _shard_splits(config, shard_index)
        labels, multi_label = tuple(shard_index["labels"]), bool(shard_index["multi_label"])
    config = config.resolve(multi_label)
    if config.batch_size % info.world_size:
        raise ConfigError(f"batch_size {config.batch_size} (global) must divide by the {info.world_size} processes")
    return config, _Data(splits, tuple(labels), multi_label, shard_index)


def _fit_to_data(config: TrainConfig, data: _Data) -> tuple[TrainConfig, list[str]]:
    """The class balance, a warning for classes with few clips, and what small data changes: without a held-out
    split, validation scores the training clips, so the last epoch is kept and nothing stops early; the folder
    recipe's masks shrink with fewer than 50 clips per class (a 48-bin mask on 10 clips of a class hides most of
    what there is to learn). Returns the config to run and the lines to print."""
    counts = sorted(data.splits.train.class_counts())
    if not counts or data.shard_index is not None or data.distill is not None:
        return config, []
    median = counts[len(counts) // 2]
    notes = [f"class balance (train clips per class): min {counts[0]}, median {median}, max {counts[-1]} over "
             f"{len(counts)} classes", *(data.sed.notes if data.sed is not None else [])]
    if config.layout == "folder":
        few = [name for name, n in zip(data.splits.train.labels, data.splits.train.class_counts(), strict=True)
               if n < FEW_CLIPS]
        if few:
            notes.append(f"warning: {len(few)} class(es) have fewer than {FEW_CLIPS} training clips ("
                         f"{', '.join(few[:5])}{', ...' if len(few) > 5 else ''}); expect unreliable scores for them")
    if data.splits.valid_is_train:
        config = config.replace(selection="last", patience=None)
        notes.append("too few clips to hold out a validation split: validation scores the training clips, the last "
                     "epoch is kept and nothing stops early")
    if config.recipe == "folder" and config.scale_augment and median < 50:
        scale = max(median / 50, 0.25)
        augment = dataclasses.replace(config.augment, freqm=round(config.augment.freqm * scale),
                                      timem=round(config.augment.timem * scale))
        config = config.replace(augment=augment, scale_augment=False)  # applied once (resume sees the result)
        notes.append(f"few clips per class (median {median}): masks scaled by {scale:.2f} to freqm {augment.freqm}, "
                     f"timem {augment.timem} (--set scale_augment=false keeps the recipe's)")
    return config, notes


def _stale(rows: list[dict[str, Any]], config: TrainConfig) -> bool:
    """Early stopping: `patience` epochs since the best main-metric epoch."""
    if config.patience is None:
        return False
    key = config.main_metric
    values = [r[key] if math.isfinite(r[key]) else -math.inf for r in rows]
    return len(values) - 1 - values.index(max(values)) >= config.patience


def _start(config: TrainConfig, data: _Data, out: Path, resume: bool, info: D.DistInfo, say: Printer) -> _Run:
    """Seed, then the model, optimiser, scheduler and loaders: fresh, or as the checkpoint in `out` left them."""
    seed_everything(config.seed, config.deterministic)
    checkpoint_dir = out / "checkpoint"
    state: dict[str, Any] | None = None
    found = C.find_checkpoint(checkpoint_dir, say) if resume and info.is_main else None
    if D.broadcast_object(info, found is not None):  # every rank reads the checkpoint rank 0 found (or restored)
        if FT.parse_finetune(config.finetune)[0] == "lora":
            raise ConfigError(f"{out}: --resume does not continue a --finetune lora run (its checkpoints hold the "
                              "merged model, not the adapters); train into a new -o/--output")
        model, state = C.load_training_state(checkpoint_dir)
        config = C.check_resume_config(TrainConfig.from_dict(json.loads(state["config"])), config, out)
        say(f"resuming {out} after epoch {state['epoch']}")
    else:
        if resume:
            say(f"no checkpoint in {out}; starting from epoch 1")
        model = build_model(config, data.labels, config.multi_label)
        if config.frame_head is not None:  # the sed recipe: the encoder (and clip head) built, a new frame head
            model = with_frame_head(model, config.frame_head)
    plan = FT.prepare(model, config)  # freezes what the mode keeps (adds LoRA adapters first)
    model.to(info.device).train()
    optimizer = make_optimizer(model, config)
    amp = autocast_dtype(info.device)
    linear = FT.parse_finetune(config.finetune)[0] == "linear"
    if linear and data.sed is not None:
        raise ConfigError("--finetune linear trains the clip head on cached features; a frame model needs its frame "
                          "head trained on the tokens: use full, last:N or lora")
    net: torch.nn.Module = model.mlp_head if linear else model  # the linear probe trains the head on features
    if data.sed is not None:
        net = SedForward(model)  # clip and frame logits and weak scores in one forward
    elif data.distill is not None and model.has_frame_head and data.distill.stored.frame_prob is not None:
        net = DI.BothHeads(model)  # clip and frame logits in one output, for the frame loss
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if linear:
        train_data, sampler, loader = _feature_loader(config, data, info, model, amp, say)
    elif data.distill is not None:
        train_data, sampler, loader = _distill_loader(config, data, info, model)
    else:
        train_data, sampler, loader = _train_loader(config, data, info, model)
    run = _Run(config=config, out=out, info=info, say=say, model=model, net=net, optimizer=optimizer,
               scheduler=make_scheduler(optimizer, config), amp=amp,
               scaler=torch.amp.GradScaler("cuda") if amp == torch.float16 else None, train_data=train_data,
               sampler=sampler, loader=loader,
               valid_data=ClipDataset(data.splits.valid, config.frontend, None, seed=config.seed),
               num_classes=len(data.labels), plan=plan,
               sed_valid=SedDataset(data.sed.valid, data.labels, model.config, config.frontend, random_crops=False)
               if data.sed is not None else None)
    run.cum_sum = torch.zeros(len(data.splits.valid), run.num_classes, dtype=torch.float64)
    run.cum_count = torch.zeros(len(data.splits.valid), dtype=torch.float64)
    if state is not None:
        _restore(run, state)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        if state is not None:  # metrics.csv lists exactly the epochs the checkpoint holds
            atomic_write_text(out / "metrics.csv", metrics_csv(run.rows))
        fold = f", fold {config.fold}" if config.fold is not None else ""
        num_train = len(data.splits.train) if data.shard_index is None else train_data.num_clips
        say(f"training {config.recipe}{fold}: {num_train} train / {len(data.splits.valid)} valid clips, "
            f"{run.num_classes} classes, loss {config.loss}, {config.epochs} epochs of "
            f"{len(loader)} steps x {config.batch_size} clips on {info.world_size} x {info.device}"
            f"{_threads_note(info.device)}"
            f"{', ' + str(amp).removeprefix('torch.') if amp else ''}")
        say(plan.describe())  # static facts once here; each epoch then gets one line (`_save_epoch`)
    run.writer = tensorboard_writer(out, config, info.is_main)
    return run


def _threads_note(device: torch.device) -> str:
    """" (N torch threads)" on a CPU (what the speed of a CPU run, and its last bits, depend on), else ""."""
    n = torch.get_num_threads()
    return f" ({n} torch thread{'s' if n > 1 else ''})" if device.type == "cpu" else ""


def _train_loader(config: TrainConfig, data: _Data, info: D.DistInfo, model: AST
                  ) -> tuple[Any, EpochSampler | None, torch.utils.data.DataLoader]:
    """(training data set, its epoch sampler or None for shards, DataLoader) with the training augmentation."""
    per_rank = config.batch_size // info.world_size
    if data.sed is not None:  # crops with frame targets on the model's column grid
        sed_data = SedDataset(data.sed.train, data.labels, model.config, config.frontend, config.augment,
                              seed=config.seed)
        weights = balanced_sed_weights(sed_data) if config.balanced_sampling else None
        sampler = EpochSampler(len(sed_data), weights=weights, shuffle=True, seed=config.seed,
                               num_replicas=info.world_size, rank=info.rank)
        return sed_data, sampler, torch.utils.data.DataLoader(sed_data, batch_size=per_rank, sampler=sampler,
                                                              collate_fn=sed_collate, num_workers=config.num_workers)
    if data.shard_index is not None and config.balanced_sampling:  # clips read by offset, drawn by the sampler
        train_data = ShardClips(config.data, config.frontend, config.augment, seed=config.seed)
        weights = balanced_weights_from_targets(train_data.all_targets(), train_data.num_classes)
        sampler = EpochSampler(len(train_data), weights=weights, shuffle=True, seed=config.seed,
                               num_replicas=info.world_size, rank=info.rank)
        return train_data, sampler, torch.utils.data.DataLoader(train_data, batch_size=per_rank, sampler=sampler,
                                                                collate_fn=collate, num_workers=config.num_workers)
    if data.shard_index is not None:  # a stream of tar shards, split over ranks and workers by ShardDataset itself
        train_data = ShardDataset(config.data, config.frontend, config.augment, seed=config.seed, shuffle=True)
        return train_data, None, torch.utils.data.DataLoader(train_data, batch_size=per_rank, collate_fn=collate,
                                                             num_workers=config.num_workers)
    train = data.splits.train
    train_data = ClipDataset(train, config.frontend, config.augment, seed=config.seed)
    weights = balanced_weights(train) if config.balanced_sampling else None
    sampler = EpochSampler(len(train), weights=weights, shuffle=True, seed=config.seed,
                           num_replicas=info.world_size, rank=info.rank)
    loader = torch.utils.data.DataLoader(train_data, batch_size=per_rank, sampler=sampler, collate_fn=collate,
                                         num_workers=config.num_workers, drop_last=False)
    return train_data, sampler, loader


def _distill_loader(config: TrainConfig, data: _Data, info: D.DistInfo, model: AST
                    ) -> tuple[DI.DistillDataset, EpochSampler, torch.utils.data.DataLoader]:
    """The distill recipe's training data: one stored view per clip per epoch, regenerated from its seed."""
    assert data.distill is not None
    dataset = DI.train_dataset(config, data.distill, model)
    sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed, num_replicas=info.world_size,
                           rank=info.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size // info.world_size, sampler=sampler,
                                         collate_fn=collate, num_workers=config.num_workers)
    return dataset, sampler, loader


def _feature_loader(config: TrainConfig, data: _Data, info: D.DistInfo, model: AST, amp: torch.dtype | None,
                    say: Printer) -> tuple[FT.FeatureDataset, EpochSampler, torch.utils.data.DataLoader]:
    """The linear probe's training data: every training clip's pooled feature, computed once (no augmentation)."""
    if data.shard_index is not None:
        raise ConfigError("--finetune linear caches one feature per clip, which needs the clips themselves; train "
                          "from the JSON datafile or folder, not tar shards")
    per_rank = config.batch_size // info.world_size
    started = time.perf_counter()
    plain = ClipDataset(data.splits.train, config.frontend, None, seed=config.seed)
    cached = FT.cache_features(model, plain, info, per_rank * config.eval_batch_factor, config.num_workers, amp)
    keys = [data.splits.train.examples[int(i)].key for i in cached.index]
    dataset = FT.FeatureDataset(cached.logits, cached.targets, keys)
    say(f"linear probe: cached {len(dataset)} features of width {cached.logits.shape[1]} in "
        f"{time.perf_counter() - started:.1f} s (augmentation off: the head trains on these)")
    sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed, num_replicas=info.world_size,
                           rank=info.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler,
                                         collate_fn=FT.collate_features)
    return dataset, sampler, loader


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Put the optimiser, scheduler, scaler, sampler, RNGs, step and metrics back as the checkpoint saved them."""
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if run.sampler is not None:
        run.sampler.load_state_dict(state["sampler"])
    C.set_rng_state(state["rng"])
    run.start_epoch, run.global_step = int(state["epoch"]) + 1, int(state["global_step"])
    run.rows = [dict(r) for r in state["metrics"]]
    run.cum_sum, run.cum_count = state["cum_sum"], state["cum_count"]


def _train_epoch(run: _Run, epoch: int) -> tuple[float, int]:
    """One pass over the training data; returns (mean training loss over all ranks, clips skipped as unreadable).

    Batches with no readable clip are skipped (on one process) or contribute a zero gradient (under DDP, where
    every rank must take part in the all-reduce); `max_bad_batches` of them in a row end the run.
    """
    config, info, optimizer = run.config, run.info, run.optimizer
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.train_data.set_epoch(epoch)
    loss_fn = loss_function(config)
    if isinstance(run.train_data, DI.DistillDataset):  # the frame columns of a frame student's targets, if any
        loss_fn = DI.distill_loss(loss_fn, run.num_classes, config.frame_weight)
    loss_sum, loss_count, skipped, all_bad_run = 0.0, 0, 0, 0
    bar = progress_bar(len(run.loader), f"epoch {epoch}/{config.epochs}" if config.progress else None, info)
    clips_done, t_epoch, step_time, steps = 0, time.perf_counter(), 0.0, 0
    for batch in run.loader:
        D.test_failure_hook(info, run.global_step)
        lr = warmup_lr(config, run.global_step)
        if lr is not None:
            set_lr(optimizer, lr)
        skipped += len(batch.bad)
        run.bad_log.extend(f"epoch {epoch}: {b.error}" for b in batch.bad)
        if len(batch) == 0:
            all_bad_run += 1
            if all_bad_run >= config.max_bad_batches:
                raise AstAudioError(f"{all_bad_run} batches in a row had no readable clip (last: "
                                    f"{batch.bad[-1].error if batch.bad else '?'}); check the data set")
        else:
            all_bad_run = 0
        if len(batch) == 0 and not info.distributed:
            run.global_step += 1
            continue
        if len(batch) == 0:  # DDP: every rank must take part in the gradient all-reduce; add zero gradient
            x = torch.zeros(1, config.frontend.target_length, config.frontend.num_mel_bins, device=info.device)
            y = torch.zeros(1, run.num_classes, device=info.device)
            weight = 0.0
        else:
            x, y, weight = batch.x.to(info.device, non_blocking=True), batch.y.to(info.device), 1.0
        step_start = time.perf_counter()
        with torch.autocast(info.device.type, dtype=run.amp, enabled=run.amp is not None):
            logits = run.net(x)
        if run.sed_valid is not None:  # a frame model: frame, weak and clip losses (train.sed.sed_loss)
            t_dim = run.model.config.grid[1]
            frames = batch.frames.to(info.device) if weight else torch.zeros(1, t_dim, run.num_classes,
                                                                              device=info.device)
            strong = batch.strong.to(info.device) if weight else torch.ones(1, dtype=torch.bool, device=info.device)
            loss = sed_loss(logits, frames, y, strong) * weight
        else:
            loss = loss_fn(logits.float(), y) * weight
        optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(optimizer)
            run.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step_time, steps = step_time + time.perf_counter() - step_start, steps + 1
        run.global_step += 1
        if weight:
            loss_sum += float(loss.detach()) * len(batch)
            loss_count += len(batch)
        clips_done += len(batch)
        if bar is not None:
            rate = clips_done * info.world_size / max(time.perf_counter() - t_epoch, 1e-9)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", clips_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
        if run.writer is not None and run.global_step % 50 == 0:
            run.writer.add_scalar("train/loss_step", float(loss.detach()), run.global_step)
            run.writer.add_scalar("train/lr_step", optimizer.param_groups[0]["lr"], run.global_step)
    if bar is not None:
        bar.close()
    run.step_s = step_time / max(steps, 1)
    loss_sum, loss_count, skipped = D.all_reduce_sum(info, [loss_sum, loss_count, skipped])
    return loss_sum / max(loss_count, 1), int(skipped)


def _validate(run: _Run, epoch: int, train_loss: float, skipped: int, started: float) -> dict[str, Any]:
    """Validation on all ranks (gathered), the epoch's metrics row with the reference's cum ensemble, then the
    scheduler's epoch step."""
    config = run.config
    epoch_lr = run.optimizer.param_groups[0]["lr"]
    pred = predict(run.model, run.valid_data, run.info, run.per_rank * config.eval_batch_factor, config.num_workers,
                   run.amp, "validate" if config.progress else None)
    run.bad_log.extend(f"epoch {epoch} (validation): {b.error}" for b in pred.bad)
    row = epoch_row(epoch, epoch_lr, train_loss, pred, loss_function(config), config.multi_label, run.cum_sum,
                    run.cum_count, time.perf_counter() - started, skipped + len(pred.bad))
    if run.sed_valid is not None:  # the sed recipe's selection metric, on whole validation files (rank 0)
        value = validation_psds1(run.model, run.sed_valid, run.info.device) if run.info.is_main else math.nan
        row["psds1"] = D.broadcast_object(run.info, value)
    run.rows.append(row)
    run.scheduler.step()
    return row


def _save_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Main rank: the models kept for selection, the checkpoint `--resume` continues from, then the epoch's metrics.

    In that order: a write that fails (a full disk) leaves metrics.csv listing only epochs whose checkpoint was saved.
    """
    config, out = run.config, run.out
    model = FT.merged_copy(run.model)  # a normal AST (LoRA adapters merged into their layers)
    if config.selection == "wa" and config.wa_start <= epoch <= config.wa_end:
        save_model(model, out / "models" / f"epoch_{epoch}")
    if config.selection == "best" and _is_best(run.rows, config):
        save_model(model, out / "best")
    parts = {"optimizer": run.optimizer, "scheduler": run.scheduler, "scaler": run.scaler, "sampler": run.sampler}
    state = C.training_state(config, epoch, run.global_step, parts, run.rows, run.cum_sum, run.cum_count)
    try:
        C.save_checkpoint(run.checkpoint_dir, model, state)
    except OutputError as exc:
        kept = (f"{run.checkpoint_dir} still holds epoch {epoch - 1}; `--resume` continues from it" if epoch > 1
                else "no epoch was saved")
        raise OutputError(f"epoch {epoch} not saved: {exc}; {kept}", exc.target, exc.errno) from exc
    write_epoch_outputs(out, run.rows, run.writer, row)
    if run.bad_log:
        atomic_write_text(out / "bad_clips.txt", "\n".join(run.bad_log) + "\n")
    run.say(format_row(row, config))  # one line per epoch; the run's static facts were said once in `_start`


def _finish(run: _Run, data: _Data) -> RunResult:
    """Model selection on rank 0, then result.json and curves.png."""
    config, out, info = run.config, run.out, run.info
    if run.writer is not None:
        run.writer.close()
    selection = select_model(config, out, FT.merged_copy(run.model), run.rows, data.splits, info, run.amp,
                             say=run.say) if info.is_main else {}
    selection = D.broadcast_object(info, selection)
    if info.is_main:
        run.say(f"{config.finetune}: {run.step_s * 1000:.1f} ms per step, peak memory "
                f"{FT.peak_memory_mb(info.device):.0f} MB (step: the last epoch's mean)")
        finetune = {"mode": config.finetune, "trainable_parameters": run.plan.trainable,
                    "parameters": run.plan.total, "step_s": run.step_s,
                    "peak_memory_mb": FT.peak_memory_mb(info.device)}
        if config.save_adapters and FT.has_adapters(run.model):
            FT.save_adapters(run.model, config, out / "adapters")
        write_json(out / "result.json", {"config": config.to_dict(), "epochs": run.rows, "finetune": finetune,
                                         **selection})
        try:
            from .curves import plot_curves  # matplotlib, imported only here

            plot_curves(run.rows, out / "curves.png", title=f"{config.recipe}"
                        + (f" fold {config.fold}" if config.fold is not None else ""))
        except ImportError as exc:  # matplotlib is in the train extra; the run itself does not need it
            run.say(f"curves.png skipped: {exc}")
    D.barrier(info)
    return RunResult(out=out, rows=run.rows, model_dir=out / "model", selection=selection)


# ----------------------------------------------------------------------------------------------------------------
# Whole recipes


def run(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False, printer: Printer = _stderr
        ) -> RunResult | dict[str, Any]:
    """Run a recipe: one training run, or, for ESC-50 without a fold, every fold and the fold-averaged summary."""
    out = Path(out)
    info = D.setup(config.device)
    # seed_everything switches deterministic kernels on for training; give the caller's setting back afterwards
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if config.layout != "esc50" or config.fold is not None:
            return train_run(config, out, resume=resume, printer=printer, info=info)
        fold_rows = {}
        for k in config.folds or ESC50_FOLDS:
            fold_out = out / f"fold{k}"
            if resume and (fold_out / "result.json").is_file():
                fold_rows[k] = json.loads((fold_out / "result.json").read_text())["epochs"]
                continue
            fold_rows[k] = train_run(config.replace(fold=k), fold_out, resume=resume, printer=printer,
                                     info=info).rows
        summary = M.esc50_summary(fold_rows, config.resolve(multi_label=False).main_metric)
        if info.is_main:
            write_json(out / "summary.json", summary)
            lines = ["fold," + summary["metric"]]
            lines += [f"{k},{v:.6g}" for k, v in zip(summary["folds"], summary["fold_values"], strict=True)]
            lines.append(f"mean,{summary['mean']:.6g}")
            atomic_write_text(out / "acc_fold.csv", "\n".join(lines) + "\n")
            printer(f"ESC-50 {len(summary['folds'])}-fold: best fold-averaged epoch {summary['best_epoch']}, "
                    f"{summary['metric']} {summary['mean']:.4f} (folds "
                    f"{', '.join(f'{v:.4f}' for v in summary['fold_values'])})")
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        D.cleanup()
