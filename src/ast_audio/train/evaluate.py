"""Evaluation: a model's logits on a split (split over DDP ranks, gathered), and the metrics the runs report.

`predict` gives the logits of every readable clip in manifest order; `epoch_row` turns one epoch's validation
predictions into its metrics row, with the reference's running-mean ("cum") ensemble of per-epoch predictions and
the validation loss computed on logits (the reference applies the loss to sigmoid outputs, spec §3.1);
`select_model` picks the run's final model (weight averaging, best epoch or last) with `evaluate_split`;
`evaluate_checkpoints` scores one checkpoint or the ensemble of several (`ast-audio eval`). Scores follow the one
rule of `ast_audio.model.scores.probabilities`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AstAudioError, ConfigError
from ..labels import match_classes
from ..model import AST
from ..model.scores import probabilities
from ..utils import atomic_path
from ..weights.checkpoint import load_model, save_model
from . import dist as D
from . import metrics as M
from .average import average_checkpoints
from .data import ClipDataset, collate
from .layouts import Manifest, Splits, load_splits
from .optim import loss_function
from .outputs import json_safe, write_json
from .recipes import TrainConfig
from .sampler import EpochSampler


@dataclass
class Predictions:
    """Logits of a split in manifest order (rows of unreadable clips are missing: `index` says which rows exist)."""

    index: np.ndarray  # (N',) manifest indices of the rows
    logits: torch.Tensor  # (N', C) float32
    targets: torch.Tensor  # (N', C) float32
    bad: list[Any] = field(default_factory=list)


def progress_bar(total: int, desc: str | None, info: D.DistInfo):
    """A tqdm bar on stderr on the main rank (None elsewhere, or when `desc` is None)."""
    if desc is None or not info.is_main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, info: D.DistInfo, batch_size: int, num_workers: int = 0,
            amp: torch.dtype | None = None, progress: str | None = None,
            on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Logits of every clip of `dataset`, split over DDP ranks and gathered on all of them (duplicates from the
    sampler's padding dropped). `progress`: a tqdm bar's title (training); `on_batch(done, batches)`: a callback."""
    sampler = EpochSampler(len(dataset), shuffle=False, num_replicas=info.world_size, rank=info.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=num_workers)
    position = {ex.key: i for i, ex in enumerate(dataset.manifest.examples)}
    was_training = model.training
    model.eval()
    keys: list[str] = []
    logits, targets, bad = [], [], []
    bar = progress_bar(len(loader), progress, info)
    for done, batch in enumerate(loader, 1):
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
        if on_batch is not None:
            on_batch(done, len(loader))
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


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def epoch_row(epoch: int, lr: float, train_loss: float, pred: Predictions, loss_fn: Loss, multi_label: bool,
              cum_sum: torch.Tensor, cum_count: torch.Tensor, seconds: float, skipped: int) -> dict[str, Any]:
    """One epoch's metrics row (the columns of metrics.csv) from its validation predictions; adds the epoch's
    scores to the running-mean ensemble `cum_sum` / `cum_count` (updated in place) and reports its mAP as cum_mAP."""
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


def evaluate_split(model: AST, manifest: Manifest, loss_fn: Loss, multi_label: bool, info: D.DistInfo,
                   batch_size: int, num_workers: int = 0, amp: torch.dtype | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Metrics (mAP, mAUC, d_prime, acc), loss and skipped-clip count of `model` on `manifest`, on this process
    alone (model selection runs on rank 0)."""
    local = D.DistInfo(rank=0, world_size=1, local_rank=info.local_rank, device=info.device)
    pred = predict(model.to(info.device), ClipDataset(manifest, model.frontend, None, seed=seed), local, batch_size,
                   num_workers, amp)
    result = M.evaluate(probabilities(pred.logits, multi_label).double().numpy(), pred.targets.numpy()).to_dict()
    result["loss"] = float(loss_fn(pred.logits, pred.targets)) if len(pred.index) else math.nan
    result["skipped"] = len(pred.bad)
    return result


def evaluate_checkpoints(checkpoints: Sequence[str | os.PathLike], layout: str, data: str, *,
                         split: str | None = None, fold: int | None = None, eval_data: str | None = None,
                         label_csv: str | None = None, holdout: float = 0.2, seed: int = 0, batch_size: int = 24,
                         num_workers: int = 0, device: str = "auto",
                         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint, or of the ensemble of several (mean of their sigmoid, or softmax for single-label
    models, outputs: the paper's Ensemble-S/M), on a split of a data set. `progress(batches_done, batches)` is called
    after each batch (over all the checkpoints).

    Each model's outputs are matched to the data's classes by name (`ast_audio.labels.match_classes`), so the
    class order of the data (folder names sorted, or a label CSV) need not be the model's.

    Raises:
        ConfigError: no such split, or a model whose classes are not the data's (one line naming the first
            mismatches).
    """
    splits = load_splits(layout, data, fold=fold, eval_data=eval_data, label_csv=label_csv, holdout=holdout,
                         seed=seed)
    name = split or ("test" if splits.test is not None else "valid")
    manifest = getattr(splits, name, None)
    if manifest is None:
        raise ConfigError(f"the {layout} data at {data} has no {name} split; choose --split train or valid")
    info = D.DistInfo(rank=0, world_size=1, local_rank=0, device=D.resolve_device(device))
    total, index, targets, bad = None, None, None, 0
    for k, ckpt in enumerate(checkpoints):
        model = load_model(ckpt).to(info.device)
        # the model output of each data class, by name (never silently by position)
        columns = match_classes(manifest.labels, model.labels, data_where=f"the {name} split of {data}",
                                model_where=str(ckpt))
        pred = predict(model, ClipDataset(manifest, model.frontend, None, seed=seed), info, batch_size, num_workers,
                       on_batch=_ensemble_progress(progress, k, len(checkpoints)))
        probs = probabilities(pred.logits, model.multi_label).double()[:, columns]  # (N, C_model) -> (N, C_data)
        if total is None:
            total, index, targets, bad = probs, pred.index, pred.targets, len(pred.bad)
        else:
            if not np.array_equal(index, pred.index):
                raise AstAudioError("the checkpoints read different clips (a file became unreadable); retry")
            total = total + probs
    assert total is not None and targets is not None
    result = M.evaluate((total / len(checkpoints)).numpy(), targets.numpy()).to_dict()
    result.update({"split": name, "checkpoints": [str(c) for c in checkpoints], "skipped": bad})
    return json_safe(result)


def _ensemble_progress(progress: Callable[[int, int], None] | None, k: int,
                       n: int) -> Callable[[int, int], None] | None:
    """Progress over the passes of n checkpoints: batch i of b of checkpoint k -> progress(k * b + i, n * b)."""
    if progress is None:
        return None
    return lambda done, batches: progress(k * batches + done, n * batches)


def _copy_model(src: Path, dst: Path) -> None:
    """Copy the model folder `src` to `dst` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)


def select_model(config: TrainConfig, out: Path, model: AST, rows: list[dict[str, Any]], splits: Splits,
                 info: D.DistInfo, amp: torch.dtype | None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Model selection on rank 0 after the last epoch, written to out/model: weight averaging of the epochs saved
    under out/models (wa), the best validation epoch saved in out/best (+ its test split score), or the last
    epoch. Returns what was selected and its metrics (for result.json)."""
    batch = max(1, config.batch_size // info.world_size) * config.eval_batch_factor

    def evaluate(candidate: AST, manifest: Manifest) -> dict[str, Any]:
        return evaluate_split(candidate, manifest, loss_function(config), config.multi_label, info, batch,
                              config.num_workers, amp, seed=config.seed)

    if config.selection == "wa":
        last = min(config.wa_end, rows[-1]["epoch"])  # the last epoch run (a time budget may stop a run early)
        epochs = list(range(config.wa_start, last + 1))
        if not epochs:  # fewer epochs than wa_start: nothing to average, keep the last epoch
            say(f"weight averaging: only {rows[-1]['epoch']} epochs (< wa_start {config.wa_start}); using the last "
                "epoch")
            save_model(model, out / "model")
            return {"selection": "last", "valid": rows[-1]}
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
