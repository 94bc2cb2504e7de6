"""The training engine: the reference's `traintest.py` loop (spec §3.1) on DDP, with resumable checkpoints.

One run = `train_run(config, out)`: data -> model -> epochs of (train, validate, scheduler step, checkpoint) ->
model selection (weight averaging, best epoch or last) -> `out/model`, a native checkpoint. `run` adds the
ESC-50 five-fold loop and its fold-averaged summary (spec §3.3).

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

import csv
import io
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ASTConfig, FrontendConfig
from ..errors import AstAudioError, CheckpointError, ConfigError, OutputError
from ..model import AST
from ..utils import atomic_path, atomic_write_text, backup_path, state_nbytes, temp_paths
from . import dist as D
from . import metrics as M
from .recipes import ESC50_FOLDS, TrainConfig, milestones

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
STATE_FORMAT = "ast-audio-train"
STATE_VERSION = 1
# Fields that may change when a run is resumed (where and how it runs, not what it computes).
RUNTIME_FIELDS = frozenset({"device", "num_workers", "progress", "tensorboard", "data", "eval_data", "label_csv",
                            "max_bad_batches"})
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "valid_loss", "mAP", "mAUC", "d_prime", "acc", "cum_mAP", "seconds",
                  "skipped")
DEFAULT_AUDIOSET_SOURCE = "MIT/ast-finetuned-audioset-10-10-0.4593"

Printer = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Pieces (pure or nearly so; tested one by one)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch; with `deterministic`, ask torch for deterministic kernels (CPU runs then repeat
    bit for bit; CUDA ones as far as cuBLAS/cuDNN allow, `warn_only` so no kernel is refused)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Adam:
    """Adam over every parameter in one group (norms, biases, tokens included), as the reference (spec §3.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Epoch-level MultiStepLR(range(start, 1000, step), gamma), stepped after each epoch's validation."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(config), gamma=config.lr_scheduler_decay)


def warmup_lr(config: TrainConfig, global_step: int) -> float | None:
    """The reference's staircase warm-up: at steps 0, 50, ..., 1000 the lr becomes step/1000 * lr; None otherwise.

    The lr set at a step stays until the next multiple of 50, so steps 0-49 train with lr 0 and step 1000 restores
    the full lr (spec §3.1).
    """
    if config.warmup and global_step <= config.warmup_steps and global_step % config.warmup_interval == 0:
        return global_step / config.warmup_steps * config.lr
    return None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c y_c log softmax(z)_c: cross-entropy with soft (mixup) targets.

    Equals `F.cross_entropy(logits, targets.argmax(1))` for one-hot targets; with mixup targets
    λ e_a + (1-λ) e_b it is λ CE(a) + (1-λ) CE(b), which the reference's `.long()` truncation loses.
    """
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def loss_function(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(B, C) logits, (B, C) soft targets -> scalar loss: BCE with logits (mean over B*C) or soft cross-entropy."""
    if config.loss == "bce":
        return F.binary_cross_entropy_with_logits
    if config.loss == "ce":
        return soft_cross_entropy
    raise ConfigError(f"loss {config.loss!r} is not resolved; call TrainConfig.resolve(multi_label) first")


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Scores for metrics and ensembles: sigmoid for multi-label (BCE) models, softmax for single-label (CE) ones."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16 (with a GradScaler); None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def frontend_of(config: TrainConfig) -> FrontendConfig:
    return FrontendConfig(sample_rate=config.sample_rate, num_mel_bins=config.num_mel_bins,
                          target_length=config.target_length, mean=config.mean, std=config.std)


def build_model(config: TrainConfig, labels: Sequence[str], multi_label: bool) -> AST:
    """The model `config.init` asks for, sized to the data: ImageNet / AudioSet adaptation (spec §1.4, §1.5),
    a checkpoint to continue from, or random init (seeded by `config.seed`).

    AudioSet initialisation always gets a new head, even for 527 classes (spec §1.5); `checkpoint:` keeps the head
    when the class count matches.
    """
    from ..weights.adapt import HEAD_KEYS
    from ..weights.checkpoint import load_model

    kind, path = config.init_spec
    frontend = frontend_of(config)
    num_classes = len(labels)
    torch.manual_seed(config.seed)  # the new head / random init depend on the seed only
    if kind == "none":
        ast_config = ASTConfig(model_size=config.model_size, input_fdim=config.num_mel_bins,
                               input_tdim=config.target_length, fstride=config.fstride, tstride=config.tstride,
                               num_classes=num_classes, **dict(config.model_config))
        return AST(ast_config, frontend=frontend, labels=list(labels), multi_label=multi_label)
    common = dict(input_fdim=config.num_mel_bins, input_tdim=config.target_length, fstride=config.fstride,
                  tstride=config.tstride, num_classes=num_classes, labels=list(labels), multi_label=multi_label,
                  frontend=frontend)
    if kind == "imagenet":
        if path is None:
            raise ConfigError(f"recipe {config.recipe!r} starts from ImageNet weights: pass --init imagenet:PATH (a "
                              "timm/DeiT checkpoint, e.g. deit_base_distilled_patch16_384 .pth/.safetensors) or "
                              "--init none to train from scratch")
        model = load_model(path, model_size=config.model_size, **common)
    else:
        source = path or DEFAULT_AUDIOSET_SOURCE
        model = load_model(source, **common)
        if kind == "audioset" and model.config.num_classes == num_classes:
            fresh = AST(model.config, frontend=model.frontend, labels=model.labels, multi_label=multi_label)
            state = model.state_dict()
            state.update({k: v for k, v in fresh.state_dict().items() if k in HEAD_KEYS})
            model.load_state_dict(state)
    return model.train()


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Predictions:
    """Logits of a split in manifest order (rows of unreadable clips are missing: `index` says which rows exist)."""

    index: np.ndarray  # (N',) manifest indices of the rows
    logits: torch.Tensor  # (N', C) float32
    targets: torch.Tensor  # (N', C) float32
    bad: list[Any] = field(default_factory=list)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, info: D.DistInfo, batch_size: int, num_workers: int = 0,
            amp: torch.dtype | None = None, progress: str | None = None) -> Predictions:
    """Logits of every clip of `dataset`, split over DDP ranks and gathered on all of them (duplicates from the
    sampler's padding dropped)."""
    from .data import collate
    from .sampler import EpochSampler

    sampler = EpochSampler(len(dataset), shuffle=False, num_replicas=info.world_size, rank=info.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=num_workers)
    position = {ex.key: i for i, ex in enumerate(dataset.manifest.examples)}
    was_training = model.training
    model.eval()
    keys: list[str] = []
    logits, targets, bad = [], [], []
    bar = _progress(len(loader), progress, info)
    for batch in loader:
        bad.extend(batch.bad)
        if len(batch):
            x = batch.x.to(info.device, non_blocking=True)
            with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                out = model(x)
            logits.append(out.float().cpu())
            targets.append(batch.y)
            keys.extend(batch.keys)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    num_classes = dataset.manifest.num_classes
    local = (keys, torch.cat(logits) if logits else torch.zeros(0, num_classes),
             torch.cat(targets) if targets else torch.zeros(0, num_classes), bad)
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    all_bad: dict[str, Any] = {}
    for r_keys, r_logits, r_targets, r_bad in D.all_gather_objects(info, local):
        for i, key in enumerate(r_keys):
            rows.setdefault(position[key], (r_logits[i], r_targets[i]))
        for b in r_bad:
            all_bad.setdefault(b.key, b)
    index = np.array(sorted(rows), dtype=np.int64)
    if len(index) == 0:
        return Predictions(index, torch.zeros(0, num_classes), torch.zeros(0, num_classes), list(all_bad.values()))
    return Predictions(index, torch.stack([rows[i][0] for i in index]), torch.stack([rows[i][1] for i in index]),
                       list(all_bad.values()))


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and lists only, so `torch.load(weights_only=True)` reads them back."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, model: AST, state: dict[str, Any]) -> None:
    """Atomically write folder/{model.safetensors, config.json, train_state.pt}: a reader (or `--resume` after a
    kill, see `find_checkpoint`) sees either the previous epoch's complete checkpoint or this one. A full disk
    raises a one-line OutputError naming the folder and the space needed; the previous checkpoint stays."""
    from ..weights.checkpoint import save_model

    with atomic_path(folder, size_hint=state_nbytes(model.state_dict()) + state_nbytes(state)) as tmp:
        save_model(model, tmp)
        torch.save(state, tmp / STATE_FILE)


def find_checkpoint(folder: Path, say: Printer = lambda _msg: None) -> Path | None:
    """The checkpoint `--resume` continues from: `folder` if it holds a training state, else the previous checkpoint
    that a kill between `atomic_path`'s two renames leaves at `backup_path(folder)` (with nothing at `folder`), which
    is moved back to `folder` (saying so in one line). Unfinished temporary checkpoints of killed writes are deleted
    (each is as large as a checkpoint). None if there is neither."""
    for stale in temp_paths(folder):
        shutil.rmtree(stale, ignore_errors=True)
    if (folder / STATE_FILE).is_file():
        return folder
    backup = backup_path(folder)
    if (backup / STATE_FILE).is_file() and not folder.exists():
        os.replace(backup, folder)
        say(f"{folder} was missing (the run was killed while replacing it); restored the previous checkpoint from "
            f"{backup}")
        return folder
    return None


def load_checkpoint(folder: Path) -> tuple[AST, dict[str, Any]]:
    """The model and training state of `folder` (read with weights_only=True: no code is unpickled)."""
    from ..weights.checkpoint import load_model

    path = folder / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: cannot read the training state ({exc}); delete {folder} to start "
                              "over") from None
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not an ast-audio training state of version {STATE_VERSION}")
    return load_model(folder), state


# ----------------------------------------------------------------------------------------------------------------
# Output helpers


def _progress(total: int, desc: str | None, info: D.DistInfo):
    if desc is None or not info.is_main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# One training run


@dataclass
class RunResult:
    """What a run produced: per-epoch rows, the selected model's folder and its metrics."""

    out: Path
    rows: list[dict[str, Any]]
    model_dir: Path | None
    selection: dict[str, Any]


def _check_resume_config(saved: TrainConfig, given: TrainConfig, folder: Path) -> TrainConfig:
    a, b = saved.to_dict(), given.to_dict()
    differ = [k for k in a if k not in RUNTIME_FIELDS and a[k] != b.get(k)]
    if differ:
        details = ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in differ[:4])
        raise ConfigError(f"{folder}: --resume with different settings ({details}); resume with the options of the "
                          "original run, or train into a new --out")
    return saved.replace(**{k: getattr(given, k) for k in RUNTIME_FIELDS})


def train_run(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False, printer: Printer = _stderr,
              info: D.DistInfo | None = None) -> RunResult:
    """Train one model (one ESC-50 fold, or one whole AudioSet / Speech Commands / folder run) into `out`."""
    from .augment import AugmentConfig
    from .data import ClipDataset, collate, load_splits
    from .sampler import EpochSampler, balanced_weights

    out = Path(out)
    info = info or D.setup(config.device)
    main = info.is_main
    say: Printer = printer if main else (lambda _msg: None)
    checkpoint_dir = out / "checkpoint"

    taken = D.broadcast_object(info, (out / "model").exists() or checkpoint_dir.exists()
                               or backup_path(checkpoint_dir).exists())  # rank 0's view, for all
    if taken and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    shard_index = _shard_index(config)
    if shard_index is None:
        splits = load_splits(config.layout, config.data, fold=config.fold, eval_data=config.eval_data,
                             label_csv=config.label_csv, holdout=config.holdout, seed=config.seed)
        labels, multi_label = splits.train.labels, splits.train.multi_label
    else:
        splits = _shard_splits(config, shard_index)
        labels, multi_label = tuple(shard_index["labels"]), bool(shard_index["multi_label"])
    num_classes = len(labels)
    config = config.resolve(multi_label)
    multi_label_scores = config.loss == "bce"
    if config.batch_size % info.world_size:
        raise ConfigError(f"batch_size {config.batch_size} (global) must divide by the {info.world_size} processes")
    per_rank = config.batch_size // info.world_size
    seed_everything(config.seed, config.deterministic)

    # ---- model, optimiser, state (fresh or resumed)
    state: dict[str, Any] | None = None
    found = find_checkpoint(checkpoint_dir, say) if resume and main else None
    if D.broadcast_object(info, found is not None):  # every rank reads the checkpoint rank 0 found (or restored)
        model, state = load_checkpoint(checkpoint_dir)
        config = _check_resume_config(TrainConfig.from_dict(json.loads(state["config"])), config, out)
        say(f"resuming {out} after epoch {state['epoch']}")
    else:
        if resume:
            say(f"no checkpoint in {out}; starting from epoch 1")
        model = build_model(config, labels, multi_label_scores)
    model.to(info.device).train()
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    amp = autocast_dtype(info.device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    frontend = frontend_of(config)
    augment = AugmentConfig(mixup=config.mixup, mixup_alpha=config.mixup_alpha, freqm=config.freqm,
                            timem=config.timem, noise=config.noise)
    valid_data = ClipDataset(splits.valid, frontend, None, seed=config.seed)
    sampler: EpochSampler | None = None
    if shard_index is None:
        train_data: Any = ClipDataset(splits.train, frontend, augment, seed=config.seed)
        weights = balanced_weights(splits.train) if config.balanced_sampling else None
        sampler = EpochSampler(len(splits.train), weights=weights, shuffle=True, seed=config.seed,
                               num_replicas=info.world_size, rank=info.rank)
        loader = torch.utils.data.DataLoader(train_data, batch_size=per_rank, sampler=sampler, collate_fn=collate,
                                             num_workers=config.num_workers, drop_last=False)
        num_train = len(splits.train)
    else:  # a stream of tar shards, split over ranks and workers by ShardDataset itself
        from .shards import ShardDataset

        train_data = ShardDataset(config.data, frontend, augment, seed=config.seed, shuffle=True)
        loader = torch.utils.data.DataLoader(train_data, batch_size=per_rank, collate_fn=collate,
                                             num_workers=config.num_workers)
        num_train = train_data.num_clips

    start_epoch, global_step = 1, 0
    rows: list[dict[str, Any]] = []
    cum_sum = torch.zeros(len(splits.valid), num_classes, dtype=torch.float64)
    cum_count = torch.zeros(len(splits.valid), dtype=torch.float64)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if sampler is not None:
            sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"])
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
        rows = [dict(r) for r in state["metrics"]]
        cum_sum, cum_count = state["cum_sum"], state["cum_count"]

    net: torch.nn.Module = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    loss_fn = loss_function(config)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        if state is not None:  # metrics.csv lists exactly the epochs the checkpoint holds
            atomic_write_text(out / "metrics.csv", _csv_text(rows))
        fold = f", fold {config.fold}" if config.fold is not None else ""
        say(f"training {config.recipe}{fold}: {num_train} train / {len(splits.valid)} valid clips, "
            f"{num_classes} classes, loss {config.loss}, {config.epochs} epochs of "
            f"{len(loader)} steps x {config.batch_size} clips on {info.world_size} x {info.device}"
            f"{', ' + str(amp).removeprefix('torch.') if amp else ''}")
    writer = _tensorboard(out, config, main)
    bad_log: list[str] = []

    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_data.set_epoch(epoch)
        loss_sum, loss_count, skipped, all_bad_run = 0.0, 0, 0, 0
        bar = _progress(len(loader), f"epoch {epoch}/{config.epochs}" if config.progress else None, info)
        clips_done, t_epoch = 0, time.perf_counter()
        for batch in loader:
            lr = warmup_lr(config, global_step)
            if lr is not None:
                set_lr(optimizer, lr)
            skipped += len(batch.bad)
            bad_log.extend(f"epoch {epoch}: {b.error}" for b in batch.bad)
            if len(batch) == 0:
                all_bad_run += 1
                if all_bad_run >= config.max_bad_batches:
                    raise AstAudioError(f"{all_bad_run} batches in a row had no readable clip (last: "
                                        f"{batch.bad[-1].error if batch.bad else '?'}); check the data set")
            else:
                all_bad_run = 0
            if len(batch) == 0 and not info.distributed:
                global_step += 1
                continue
            if len(batch) == 0:  # DDP: every rank must take part in the gradient all-reduce; add zero gradient
                x = torch.zeros(1, config.target_length, config.num_mel_bins, device=info.device)
                y = torch.zeros(1, num_classes, device=info.device)
                weight = 0.0
            else:
                x, y, weight = batch.x.to(info.device, non_blocking=True), batch.y.to(info.device), 1.0
            with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                logits = net(x)
            loss = loss_fn(logits.float(), y) * weight
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            global_step += 1
            if weight:
                loss_sum += float(loss.detach()) * len(batch)
                loss_count += len(batch)
            clips_done += len(batch)
            if bar is not None:
                rate = clips_done * info.world_size / max(time.perf_counter() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", clips_s=f"{rate:.1f}", refresh=False)
                bar.update(1)
            if writer is not None and global_step % 50 == 0:
                writer.add_scalar("train/loss_step", float(loss.detach()), global_step)
                writer.add_scalar("train/lr_step", optimizer.param_groups[0]["lr"], global_step)
        if bar is not None:
            bar.close()
        epoch_lr = optimizer.param_groups[0]["lr"]
        loss_sum, loss_count, skipped = D.all_reduce_sum(info, [loss_sum, loss_count, skipped])

        # ---- validation (all ranks, gathered), the reference's cum ensemble
        pred = predict(model, valid_data, info, per_rank * config.eval_batch_factor, config.num_workers, amp,
                       "validate" if config.progress else None)
        bad_log.extend(f"epoch {epoch} (validation): {b.error}" for b in pred.bad)
        row = _epoch_row(epoch, epoch_lr, loss_sum / max(loss_count, 1), pred, loss_fn, multi_label_scores,
                         cum_sum, cum_count, time.perf_counter() - t0, int(skipped) + len(pred.bad))
        rows.append(row)
        scheduler.step()

        if main:
            # Models first, the checkpoint (what --resume continues from) next, the epoch's metrics last: a write that
            # fails (a full disk) leaves metrics.csv listing only epochs whose checkpoint was saved.
            if config.selection == "wa" and config.wa_start <= epoch <= config.wa_end:
                from ..weights.checkpoint import save_model

                save_model(model, out / "models" / f"epoch_{epoch}")
            if config.selection == "best" and _is_best(rows, config):
                from ..weights.checkpoint import save_model

                save_model(model, out / "best")
            try:
                save_checkpoint(checkpoint_dir, model, {
                    "format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch, "global_step": global_step,
                    "config": json.dumps(config.to_dict()), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
                    "sampler": sampler.state_dict() if sampler is not None else {}, "rng": _rng_state(),
                    "metrics": rows, "cum_sum": cum_sum, "cum_count": cum_count})
            except OutputError as exc:
                kept = (f"{checkpoint_dir} still holds epoch {epoch - 1}; `--resume` continues from it" if epoch > 1
                        else "no epoch was saved")
                raise OutputError(f"epoch {epoch} not saved: {exc}; {kept}", exc.target, exc.errno) from exc
            _write_epoch_outputs(out, rows, writer, row)
            if bad_log:
                atomic_write_text(out / "bad_clips.txt", "\n".join(bad_log) + "\n")
            say(_format_row(row, config))
        D.barrier(info)

    if writer is not None:
        writer.close()
    selection = _select(config, out, model, rows, splits, info, amp, say) if main else {}
    selection = D.broadcast_object(info, selection)
    model_dir = out / "model"
    if main:
        write_json(out / "result.json", {"config": config.to_dict(), "epochs": rows, **selection})
        try:
            from .curves import plot_curves

            plot_curves(rows, out / "curves.png", title=f"{config.recipe}"
                        + (f" fold {config.fold}" if config.fold is not None else ""))
        except ImportError as exc:  # matplotlib is in the train extra; the run itself does not need it
            say(f"curves.png skipped: {exc}")
    D.barrier(info)
    return RunResult(out=out, rows=rows, model_dir=model_dir, selection=selection)


def _shard_index(config: TrainConfig) -> dict[str, Any] | None:
    """index.json of `config.data` if it is a shard folder written by `ast-audio prepare`, else None."""
    from .shards import is_shard_folder, read_index

    if config.data is None or not is_shard_folder(config.data):
        return None
    if config.balanced_sampling:
        raise ConfigError(f"{config.data}: balanced sampling needs random access to every clip, which tar shards do "
                          "not give; train from the JSON datafile, or pass --set balanced_sampling=false")
    return read_index(config.data)


def _shard_splits(config: TrainConfig, index: dict[str, Any]):
    """Validation set of a shard-trained run: --eval-data as files (the whole of it: it is the evaluation set)."""
    from .data import Splits, load_splits

    if config.eval_data is None:
        raise ConfigError(f"{config.data} holds training shards: give the validation set with --eval-data (an "
                          "AudioSet JSON datafile, or a folder/manifest of files)")
    whole = load_splits(config.layout, config.eval_data, fold=config.fold, eval_data=config.eval_data,
                        label_csv=config.label_csv, holdout=config.holdout, seed=config.seed)
    if tuple(whole.valid.labels) != tuple(index["labels"]):
        raise ConfigError(f"{config.eval_data}: its labels differ from those of the shards in {config.data}; "
                          "prepare the shards and the validation set with the same label CSV")
    return Splits(train=whole.valid, valid=whole.valid, test=None)


def _tensorboard(out: Path, config: TrainConfig, main: bool):
    if not (main and config.tensorboard):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _epoch_row(epoch: int, lr: float, train_loss: float, pred: Predictions, loss_fn, multi_label: bool,
               cum_sum: torch.Tensor, cum_count: torch.Tensor, seconds: float, skipped: int) -> dict[str, Any]:
    valid_loss = float(loss_fn(pred.logits, pred.targets)) if len(pred.index) else math.nan  # on logits
    scores = probabilities(pred.logits, multi_label).double()
    result = M.evaluate(scores.numpy(), pred.targets.numpy())
    cum_sum[pred.index] += scores
    cum_count[pred.index] += 1
    seen = cum_count > 0
    cum = M.evaluate((cum_sum[seen] / cum_count[seen, None]).numpy(), _targets_at(pred, seen))
    return {"epoch": epoch, "lr": lr, "train_loss": train_loss, "valid_loss": valid_loss, "mAP": result.mAP,
            "mAUC": result.mAUC, "d_prime": result.d_prime, "acc": result.acc, "cum_mAP": cum.mAP,
            "seconds": seconds, "skipped": skipped}


def _targets_at(pred: Predictions, seen: torch.Tensor) -> np.ndarray:
    """Targets of the rows in `seen` (a clip unreadable this epoch but read before keeps its cum prediction)."""
    where = np.flatnonzero(seen.numpy())
    lookup = {int(i): r for r, i in enumerate(pred.index)}
    if all(int(i) in lookup for i in where):
        return pred.targets[[lookup[int(i)] for i in where]].numpy()
    return np.full((len(where), pred.targets.shape[1]), np.nan)  # cannot happen unless a file changed mid-run


def _format_row(row: dict[str, Any], config: TrainConfig) -> str:
    main = config.main_metric
    return (f"epoch {row['epoch']}: lr {row['lr']:.3g}, train loss {row['train_loss']:.4f}, valid loss "
            f"{row['valid_loss']:.4f}, {main} {row[main]:.4f}, mAUC {row['mAUC']:.4f}, cum_mAP {row['cum_mAP']:.4f}, "
            f"{row['seconds']:.1f} s" + (f", {row['skipped']} clips skipped" if row["skipped"] else ""))


def _write_epoch_outputs(out: Path, rows: list[dict[str, Any]], writer, row: dict[str, Any]) -> None:
    atomic_write_text(out / "metrics.csv", _csv_text(rows))
    if writer is not None:
        for key in METRIC_COLUMNS[1:]:
            value = row[key]
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        writer.flush()


def _is_best(rows: list[dict[str, Any]], config: TrainConfig) -> bool:
    """Is the last row the best so far by the main metric (ties keep the earlier epoch)?"""
    key = config.main_metric
    values = [r[key] if math.isfinite(r[key]) else -math.inf for r in rows]
    return values[-1] > max(values[:-1], default=-math.inf) or len(values) == 1


def _copy_model(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)


def _select(config: TrainConfig, out: Path, model: AST, rows: list[dict[str, Any]], splits, info: D.DistInfo,
            amp, say: Printer) -> dict[str, Any]:
    """Model selection on rank 0: weight averaging, best validation epoch (+ test split) or the last epoch."""
    from ..weights.checkpoint import load_model, save_model
    from .data import ClipDataset

    local = D.DistInfo(rank=0, world_size=1, local_rank=info.local_rank, device=info.device)
    frontend = frontend_of(config)
    batch = max(1, config.batch_size // info.world_size) * config.eval_batch_factor
    multi = config.loss == "bce"

    def evaluate(m: AST, manifest) -> dict[str, Any]:
        pred = predict(m.to(info.device), ClipDataset(manifest, frontend, None, seed=config.seed), local, batch,
                       config.num_workers, amp)
        result = M.evaluate(probabilities(pred.logits, multi).double().numpy(), pred.targets.numpy()).to_dict()
        result["loss"] = float(loss_function(config)(pred.logits, pred.targets)) if len(pred.index) else math.nan
        result["skipped"] = len(pred.bad)
        return result

    if config.selection == "wa":
        last = min(config.wa_end, config.epochs)
        epochs = list(range(config.wa_start, last + 1))
        if not epochs:  # fewer epochs than wa_start: nothing to average, keep the last epoch
            say(f"weight averaging: only {config.epochs} epochs (< wa_start {config.wa_start}); using the last epoch")
            save_model(model, out / "model")
            return {"selection": "last", "valid": rows[-1]}
        from .average import average_checkpoints

        averaged = average_checkpoints([out / "models" / f"epoch_{e}" for e in epochs])
        save_model(averaged, out / "model")
        result = evaluate(averaged, splits.valid)
        write_json(out / "wa_result.json", {"epochs": epochs, **result})
        say(f"weight average of epochs {epochs[0]}-{epochs[-1]}: mAP {result['mAP']:.4f}, acc {result['acc']:.4f}")
        return {"selection": "wa", "wa_epochs": epochs, "valid": result}
    if config.selection == "best":
        key = config.main_metric
        values = [r[key] if math.isfinite(r[key]) else -math.inf for r in rows]
        best = values.index(max(values))
        _copy_model(out / "best", out / "model")
        selected: dict[str, Any] = {"selection": "best", "best_epoch": rows[best]["epoch"], "valid": rows[best]}
        if splits.test is not None:
            result = evaluate(load_model(out / "model"), splits.test)
            write_json(out / "test_result.json", {"epoch": rows[best]["epoch"], **result})
            selected["test"] = result
            say(f"best validation epoch {rows[best]['epoch']} ({key} {rows[best][key]:.4f}); test {key} "
                f"{result[key]:.4f}")
        else:
            say(f"best validation epoch {rows[best]['epoch']} ({key} {rows[best][key]:.4f})")
        return selected
    save_model(model, out / "model")
    return {"selection": "last", "valid": rows[-1]}


# ----------------------------------------------------------------------------------------------------------------
# Whole recipes


def esc50_summary(fold_rows: dict[int, list[dict[str, Any]]], metric: str = "acc") -> dict[str, Any]:
    """The reference's `get_esc_result.py` (spec §3.3): average the folds' per-epoch results elementwise, pick the
    single epoch with the best fold-averaged metric, report every fold's value at that epoch and their mean."""
    folds = sorted(fold_rows)
    epochs = min(len(fold_rows[k]) for k in folds)
    mean_by_epoch = [float(np.mean([fold_rows[k][e][metric] for k in folds])) for e in range(epochs)]
    best = int(np.argmax(mean_by_epoch))
    return {"metric": metric, "folds": folds, "best_epoch": best + 1,
            "fold_values": [fold_rows[k][best][metric] for k in folds], "mean": mean_by_epoch[best],
            "mean_by_epoch": mean_by_epoch}


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
        summary = esc50_summary(fold_rows, config.resolve(multi_label=False).main_metric)
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


# ----------------------------------------------------------------------------------------------------------------
# Evaluation of saved checkpoints (`ast-audio eval`)


def evaluate_checkpoints(checkpoints: Sequence[str | os.PathLike], layout: str, data: str, *,
                         split: str | None = None, fold: int | None = None, eval_data: str | None = None,
                         label_csv: str | None = None, holdout: float = 0.2, seed: int = 0, batch_size: int = 24,
                         num_workers: int = 0, device: str = "auto") -> dict[str, Any]:
    """Metrics of one checkpoint, or of the ensemble of several (mean of their sigmoid, or softmax for single-label
    models, outputs: the paper's Ensemble-S/M), on a split of a data set."""
    from ..weights.checkpoint import load_model
    from .data import ClipDataset, load_splits

    splits = load_splits(layout, data, fold=fold, eval_data=eval_data, label_csv=label_csv, holdout=holdout,
                         seed=seed)
    name = split or ("test" if splits.test is not None else "valid")
    manifest = getattr(splits, name, None)
    if manifest is None:
        raise ConfigError(f"the {layout} data at {data} has no {name} split; choose --split train or valid")
    info = D.DistInfo(rank=0, world_size=1, local_rank=0, device=D.resolve_device(device))
    total, index, targets, bad = None, None, None, 0
    for ckpt in checkpoints:
        model = load_model(ckpt).to(info.device)
        if model.config.num_classes != manifest.num_classes:
            raise ConfigError(f"{ckpt}: the model has {model.config.num_classes} classes but the {name} split has "
                              f"{manifest.num_classes}; evaluate on the data set it was trained for")
        pred = predict(model, ClipDataset(manifest, model.frontend, None, seed=seed), info, batch_size, num_workers)
        probs = probabilities(pred.logits, model.multi_label).double()
        if total is None:
            total, index, targets, bad = probs, pred.index, pred.targets, len(pred.bad)
        else:
            if not np.array_equal(index, pred.index):
                raise AstAudioError("the checkpoints read different clips (a file became unreadable); retry")
            total = total + probs
    assert total is not None and targets is not None
    result = M.evaluate((total / len(checkpoints)).numpy(), targets.numpy()).to_dict()
    result.update({"split": name, "checkpoints": [str(c) for c in checkpoints], "skipped": bad})
    return _json_safe(result)
