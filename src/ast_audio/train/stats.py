"""Normalisation statistics as the reference computes them (`get_norm_stats.py`, spec §2.1).

The reference runs its *training* loader (augmentation on, normalisation off, batch 1000, shuffled) and reports
the mean of the per-batch means and the mean of the per-batch standard deviations (torch.std: unbiased). Padding,
masks and mixup are therefore part of the statistics, which is what the model sees in training (issue #16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .data import BadClip, ClipDataset, collate


@dataclass(frozen=True)
class NormStats:
    mean: float
    std: float
    clips: int  # clips that entered the statistics
    batches: int
    bad: list[BadClip] = field(default_factory=list)  # clips skipped as unreadable

    @property
    def skipped(self) -> int:
        return len(self.bad)


def _normalizes(dataset) -> bool:
    pipeline = getattr(dataset, "pipeline", dataset)  # ShardDataset keeps its ClipDataset in `pipeline`
    return bool(getattr(pipeline, "normalize", False))


def norm_stats(dataset: ClipDataset | torch.utils.data.IterableDataset, *, batch_size: int = 1000,
               num_batches: int | None = None, num_workers: int = 0, seed: int = 0,
               progress: Callable[[int, int | None], None] | None = None) -> NormStats:
    """Mean of per-batch means and of per-batch stds over `dataset` (built with normalize=False).

    Args:
        dataset: a ClipDataset or ShardDataset with the training augmentation and normalize=False.
        batch_size: clips per batch (the reference uses 1000); all-bad batches are skipped.
        num_batches: stop after this many batches (None = the whole set).
        num_workers: DataLoader worker processes.
        seed: the clip order is torch.randperm(N) from this seed (the reference shuffles, unseeded).
        progress: called as progress(batches_done, batches) after each batch (batches None for a stream).
    """
    if _normalizes(dataset):
        raise ConfigError("statistics must be computed on unnormalised features: build the dataset with "
                          "normalize=False")
    if batch_size < 1 or (num_batches is not None and num_batches < 1):
        raise ConfigError(f"batch_size and num_batches must be positive, got {batch_size}, {num_batches}")
    if isinstance(dataset, torch.utils.data.IterableDataset):
        order = None  # a stream shuffles itself (ShardDataset's buffer)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, collate_fn=collate,
                                         num_workers=num_workers)
    means, stds, bad, clips = [], [], [], 0
    total = None if order is None else min(len(loader), num_batches or len(loader))
    for done, batch in enumerate(loader, 1):
        if progress is not None:
            progress(done, total)
        bad.extend(batch.bad)
        if len(batch) == 0:
            continue
        means.append(batch.x.double().mean().item())
        stds.append(batch.x.double().std().item())  # unbiased, over every element of the batch
        clips += len(batch)
        if num_batches is not None and len(means) >= num_batches:
            break
    if not means:
        example = bad[0].error if bad else "the data set is empty"
        raise ConfigError(f"no clip could be read to compute statistics, e.g. {example}")
    return NormStats(mean=sum(means) / len(means), std=sum(stds) / len(stds), clips=clips, batches=len(means),
                     bad=bad)


def compute_stats(dataset: ClipDataset | torch.utils.data.IterableDataset, *, batch_size: int = 1000,
                  num_batches: int | None = None, num_workers: int = 0, seed: int = 0) -> tuple[float, float]:
    """(mean, std) for FrontendConfig / the recipe, as the reference's get_norm_stats (see `norm_stats`)."""
    result = norm_stats(dataset, batch_size=batch_size, num_batches=num_batches, num_workers=num_workers, seed=seed)
    return result.mean, result.std
