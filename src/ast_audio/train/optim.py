"""The optimisation of the reference's `traintest.py` (spec §3.1), as small pieces the engine puts together.

Adam(betas 0.95/0.999, weight decay 5e-7) over one parameter group; the staircase warm-up (lr = step/1000 * lr
every 50 steps up to step 1000, so lr = 0 for the first 50 steps); MultiStepLR milestones range(start, 1000, step)
stepped once per epoch after validation; BCE-with-logits or cross-entropy with soft (mixup) targets (the reference
truncates them with `.long()`); bf16/fp16 autocast on GPUs; seeds and deterministic kernels.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .recipes import TrainConfig, milestones


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


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16 (with a GradScaler); None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
