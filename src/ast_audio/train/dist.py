"""Distributed training through torchrun: process-group set-up from the environment, and small collectives.

`torchrun --nproc_per_node N -m ast_audio.cli train ...` (or the `ast-audio` script) sets RANK, WORLD_SIZE and
LOCAL_RANK; `setup` joins the group with gloo on CPU and NCCL on CUDA (one GPU per local rank). Without those
variables everything runs in one process and every helper here is a no-op.

Failures at scale (docs/scale.md): a rank that raises exits with one line naming itself ("rank R of W: ...", printed
by the CLI, and torchelastic's error file, which torchrun's summary shows as the root cause); torchrun's agent then
stops the other ranks. A rank that hangs or dies without its agent noticing (another node) is caught by the
collective timeout given to `init_process_group` (`AST_AUDIO_DIST_TIMEOUT_S`, default 600 s instead of torch's 30
minutes), after which every rank's collective raises. Under `torchrun --max-restarts N` (N > 0) a run continues from
the last complete checkpoint in --out by itself (`elastic_resume`): after a failure, and on the other nodes, whose
agents restart their workers for the new rendezvous without counting a restart.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

from ..errors import AstAudioError, ConfigError

# Seconds a collective (all-reduce, barrier, broadcast) may wait for the other ranks before it raises.
TIMEOUT_ENV = "AST_AUDIO_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
# Test hook "RANK:STEP[:kill]": that rank raises (or SIGKILLs itself) at that global step, on the first attempt only.
FAIL_HOOK = "AST_AUDIO_TEST_FAIL_AT"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda (this process's local GPU) if available, else cpu; "cuda" picks the local rank's GPU too."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if this process was started by torchrun, else a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not torch_dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        timeout = timedelta(seconds=collective_timeout_s())
        torch_dist.init_process_group(backend=backend, timeout=timeout, store=_round_store(world, timeout),
                                      rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def _round_store(world: int, timeout: timedelta) -> torch_dist.Store | None:
    """Under torchrun's agent store, a store prefixed by this rendezvous round; else None (torch's env:// store).

    After a restart the agent's store can still hold the previous round's keys (seen with `--standalone`), e.g. the
    address of a killed rank's gloo socket, which a new rank then connects to and is refused. The round number is
    agreed through the store itself: every rank adds 1 to a counter once, and all W ranks of round k (they start only
    after round k - 1's workers were stopped) read values in (kW, (k + 1)W].
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                                timeout=timeout)
    joined = store.add("ast_audio/joined", 1)
    return torch_dist.PrefixStore(f"ast_audio/round_{(joined - 1) // world}", store)


def collective_timeout_s() -> float:
    """The collective timeout in seconds: AST_AUDIO_DIST_TIMEOUT_S, or 600."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def elastic_restart() -> int:
    """How many times this node's torchrun agent restarted its workers after a failure (0 without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def elastic_resume() -> bool:
    """True under `torchrun --max-restarts N` with N > 0 (or after a restart): the run continues the checkpoint in
    its --out without --resume. Not the restart count alone: on a multi-node run the agents of the nodes that did
    not fail restart their workers for the new rendezvous with TORCHELASTIC_RESTART_COUNT still 0."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 or elastic_restart() > 0


def test_failure_hook(info: DistInfo, step: int) -> None:
    """Raise (or SIGKILL this process) at global `step` on the rank `AST_AUDIO_TEST_FAIL_AT` names, on the first
    attempt only (so a torchrun restart gets past it): how the tests make one rank fail at a chosen step."""
    spec = os.environ.get(FAIL_HOOK)
    if not spec or elastic_restart() > 0:
        return
    rank, at, *kind = spec.split(":")
    if int(rank) == info.rank and int(at) == step:
        if kind == ["kill"]:
            os.kill(os.getpid(), signal.SIGKILL)
        raise AstAudioError(f"test failure injected at step {step} ({FAIL_HOOK}={spec})")


def cleanup() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        torch_dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (a one-element list without DDP)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over ranks (float64 on CPU, or on the device for NCCL)."""
    if not info.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    torch_dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
