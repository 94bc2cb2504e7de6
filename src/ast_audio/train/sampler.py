"""Epoch samplers: shuffled, sequential or balanced (weighted, with replacement), split over DDP ranks.

One *global* order per epoch is drawn from `torch.Generator().manual_seed(seed + epoch)` and rank r takes
order[r::world]. With a per-rank batch b = B / world, the union of the ranks' k-th batches is exactly the
single-process k-th batch of size B, so a multi-GPU run sees the same batches as a one-process run with the
same global batch (the reference used DataParallel, which splits each batch the same way, spec §3.1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError
from .data import Manifest

# Reference constant (egs/audioset/gen_weight_file.py, from PSLA): label weight = 1000 / (count + 0.01).
BALANCE_NUMERATOR = 1000.0
BALANCE_EPSILON = 0.01


def balanced_weights(manifest: Manifest) -> torch.Tensor:
    """(N,) float64 sampling weights: the sum over a clip's labels of 1000 / (count + 0.01) (spec §3.1).

    Counts are positives per class over `manifest` (the training set). Clips without labels get weight 0.
    """
    return balanced_weights_from_targets([e.targets for e in manifest.examples], manifest.num_classes)


def balanced_weights_from_targets(targets: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """`balanced_weights` from the clips' class indices (a manifest's, or a shard folder's clip table)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)  # (C,) positives per class
    for clip in targets:
        for t in clip:
            counts[t] += 1
    label_weight = BALANCE_NUMERATOR / (counts + BALANCE_EPSILON)  # (C,)
    weights = torch.zeros(len(targets), dtype=torch.float64)
    for i, clip in enumerate(targets):
        for t in clip:
            weights[i] += label_weight[t]
    return weights


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch for one rank; the global order depends on (seed, epoch) only.

    Args:
        num_examples: data set size N.
        weights: (N,) non-negative weights -> multinomial with replacement (balanced sampling); None -> a
            permutation (shuffle=True) or 0..N-1 (shuffle=False).
        num_replicas, rank: DDP world size and this process's rank.
        num_samples: global draws per epoch with `weights` (default N, as the reference's WeightedRandomSampler).
        drop_last: drop the tail that does not divide by num_replicas instead of padding it with the first indices
            (DistributedSampler's rule).
    """

    def __init__(self, num_examples: int, *, weights: torch.Tensor | None = None, shuffle: bool = True,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, num_samples: int | None = None,
                 drop_last: bool = False) -> None:
        if num_examples < 1:
            raise ConfigError(f"the sampler needs at least one example, got {num_examples}")
        if not (num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ConfigError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if weights.shape[0] != num_examples:
                raise ConfigError(f"{weights.shape[0]} sampling weights for {num_examples} examples")
            if not (torch.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
                raise ConfigError("sampling weights must be finite, non-negative and not all zero")
        elif num_samples is not None:
            raise ConfigError("num_samples is only used with weights (sampling with replacement)")
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"num_samples must be positive, got {num_samples}")
        self.num_examples = num_examples
        self.weights = weights
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.draws = num_samples if num_samples is not None else num_examples
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last:
            self.total = (self.draws // num_replicas) * num_replicas
            if self.total == 0:
                raise ConfigError(f"drop_last with {self.draws} samples over {num_replicas} ranks leaves nothing")
        else:
            self.total = -(-self.draws // num_replicas) * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_order(self) -> torch.Tensor:
        """(total,) int64: this epoch's order over all ranks, padded or truncated to a multiple of num_replicas."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.draws, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.num_examples, generator=generator)
        else:
            order = torch.arange(self.num_examples)
        if self.total <= order.shape[0]:
            return order[: self.total]
        repeats = -(-self.total // order.shape[0])
        return order.repeat(repeats)[: self.total]  # pad by repeating from the start (DistributedSampler)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "num_examples": self.num_examples,
                "num_replicas": self.num_replicas, "draws": self.draws, "weighted": self.weights is not None,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restore the epoch and seed; refuses a state from a sampler over a different data set or world size."""
        for name, mine in (("num_examples", self.num_examples), ("draws", self.draws),
                           ("weighted", self.weights is not None)):
            if name in state and state[name] != mine:
                raise ConfigError(f"sampler state is for {name}={state[name]}, this sampler has {mine}; "
                                  "resume with the same data and sampling options")
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])
