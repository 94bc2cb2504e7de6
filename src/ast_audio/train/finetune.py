"""Fine-tuning modes: which parameters a run trains, LoRA adapters through peft, the linear probe's feature cache.

- full: every parameter (the paper's recipes).
- linear: the head (`mlp_head`: LayerNorm + Linear) on frozen features. The backbone is frozen and the model has no
  dropout, so a clip's pooled feature never changes: it is computed once per run (without augmentation, which
  would change it) and the head trains on the cached (N, D) matrix, in seconds.
- last:N: the last N blocks, the final norm and the head; the patch embedding, tokens, position embedding and the
  first depth - N blocks are frozen.
- lora: low-rank adapters (Hu et al., 2021) on the chosen Linear layers of every block (`attn.qkv`, `attn.proj`,
  `mlp.fc1`, `mlp.fc2`; matched by a full-name regex, so `patch_embed.proj` is never one) through peft's
  `inject_adapter_in_model`, which adds them in place and freezes everything else; the head trains too (a new
  task needs a new head). What is saved is a normal checkpoint: a copy with every adapter merged into its layer
  (`merged_copy`), which `tag`, `export` and `load_model` read unchanged. `save_adapters` writes the adapters and
  the head alone (peft's key names, safetensors) with their LoRA config.
"""

from __future__ import annotations

import copy
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..model import AST
from ..utils import atomic_path, atomic_write_text
from .data import Batch
from .recipes import TrainConfig, parse_finetune

# peft target of each --lora-targets name, as a regex part under `blocks.<i>.`
_TARGET_PATTERNS = {"qkv": r"attn\.qkv", "proj": r"attn\.proj", "fc1": r"mlp\.fc1", "fc2": r"mlp\.fc2"}
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def lora_pattern(targets: tuple[str, ...]) -> str:
    """The regex peft matches against full module names: the chosen Linear layers of every block."""
    return r"blocks\.\d+\.(" + "|".join(_TARGET_PATTERNS[t] for t in targets) + ")"


def lora_config(config: TrainConfig):
    """peft's LoraConfig for `config`: rank `lora_rank`, alpha = rank (scale 1, so the rank alone sets the update's
    size and the lr needs no rescaling between ranks), no dropout (AST uses none), biases frozen."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("--finetune lora needs peft: pip install 'ast-audio[finetune]'") from None
    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank, lora_dropout=0.0, bias="none",
                      target_modules=lora_pattern(tuple(config.lora_targets)))


def check_lora_rank(rank: int, model: AST) -> None:
    """A LoRA update B A of rank r adds r * (in + out) parameters to a layer that has in * out; above the narrower
    side of every adapted layer (the model's width D: qkv is D -> 3D, proj D -> D, fc1 D -> 4D, fc2 4D -> D) it
    can express nothing a rank-D update cannot and trains more parameters than the layer has. Refused."""
    width = model.config.embed_dim
    if rank > width:
        raise ConfigError(f"--lora-rank {rank} is above the model's width of {width}: a LoRA update cannot have a "
                          f"rank above its layer's smaller side; use --lora-rank 1 .. {width} (4-16 is usual)")


@dataclass(frozen=True)
class Plan:
    """What a run trains: the mode as given, and the parameter counts."""

    mode: str
    trainable: int
    total: int

    def describe(self) -> str:
        return (f"finetune {self.mode}: {self.trainable:,} of {self.total:,} parameters trainable "
                f"({100 * self.trainable / max(self.total, 1):.2f} %)")


def prepare(model: AST, config: TrainConfig) -> Plan:
    """Freeze what `config.finetune` leaves fixed (in place; LoRA adapters are added first) and count."""
    mode, count = parse_finetune(config.finetune)
    total = sum(p.numel() for p in model.parameters())
    if mode != "full":
        if mode == "lora":
            from peft import inject_adapter_in_model

            check_lora_rank(config.lora_rank, model)
            inject_adapter_in_model(lora_config(config), model)  # adds lora_A/B, freezes every other parameter
        else:
            model.requires_grad_(False)
        trained: list[torch.nn.Module] = [model.mlp_head]  # and a frame model's frame head: a new task's heads
        if model.has_frame_head:
            trained.append(model.frame_head)
        if mode == "last":
            depth = model.config.depth
            if count > depth:
                raise ConfigError(f"finetune last:{count} asks for more blocks than the model's {depth}; use "
                                  f"last:1 .. last:{depth}, or full")
            trained += [*model.blocks[depth - count:], model.norm]
        for module in trained:
            module.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Plan(config.finetune, trainable, total)


def has_adapters(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def merged_copy(model: AST) -> AST:
    """`model` itself when it has no adapters; else a copy with every LoRA layer merged into its base layer
    (W + B A * alpha / r) and replaced by it, so its state dict has the plain AST keys."""
    if not has_adapters(model):
        return model
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent_name), child, module.get_base_layer())
    merged.requires_grad_(True)
    return merged


def save_adapters(model: AST, config: TrainConfig, folder: str | Path) -> None:
    """The adapters and the head alone (folder/adapter_model.safetensors, peft key names) and their LoRA config
    (folder/adapter_config.json), atomically."""
    from safetensors.torch import save_file

    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
             if "lora_" in name or name.startswith("mlp_head.")}
    settings = lora_config(config).to_dict()
    settings = {k: (sorted(v) if isinstance(v, set) else v) for k, v in settings.items()}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / ADAPTER_FILE))
        atomic_write_text(tmp / ADAPTER_CONFIG, json.dumps(settings, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# The linear probe's cache


class _Features(torch.nn.Module):
    """(B, T, F) -> (B, D) pooled features (the head's input): what `predict` collects for the cache."""

    def __init__(self, model: AST) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embedding(x)


def cache_features(model: AST, dataset: Any, info: Any, batch_size: int, num_workers: int,
                   amp: torch.dtype | None):
    """`predict`'s Predictions of `dataset` with pooled features (N, D) in place of logits (no augmentation: give
    a dataset without one). Split over DDP ranks and gathered, as validation is."""
    from .evaluate import predict

    with torch.no_grad():
        return predict(_Features(model), dataset, info, batch_size, num_workers, amp)


class FeatureDataset(torch.utils.data.Dataset):
    """Cached (N, D) features and (N, C) targets as a training set for the head."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, keys: list[str]) -> None:
        self.features, self.targets, self.keys = features, targets, keys

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        return self.features[index], self.targets[index], self.keys[index]

    def set_epoch(self, epoch: int) -> None:
        """Nothing changes per epoch (no augmentation): the engine's interface."""


def collate_features(items: list[tuple[torch.Tensor, torch.Tensor, str]]) -> Batch:
    return Batch(torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), [i[2] for i in items])


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MB: torch's CUDA allocator peak on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
