"""Data-parallel training over `torch.distributed` (gloo on CPU, nccl on GPU), started by torchrun.

Every rank holds the whole model; each global batch is split row-wise across the ranks and the
gradients are averaged with an all-reduce before the optimizer step, so one step of N ranks
equals one step of a single process on the same global batch. Only rank 0 writes files.

What decides whether the run goes on is agreed by every rank: an error one rank raises while the
run takes its directory (a live run holding it, a finished run there, a checkpoint of another
config) is raised on every rank (`shared_outcome`), and a termination signal one rank holds stops
every rank at the same step (`agreed_max`), so that no rank waits for a peer that has gone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The rank layout torchrun sets in the environment (a single process when absent)."""
    return DistContext(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistContext:
    context = context_from_env()
    if context.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return context


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, context: DistContext) -> torch.device:
    if device.type == "cuda" and context.enabled:
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return device


def shard_batch(batch: Mapping[str, Any], context: DistContext) -> dict[str, Any]:
    """This rank's rows of a global batch (every tensor and label split along the batch axis)."""
    if not context.enabled:
        return dict(batch)
    size = int(batch["input_ids"].shape[0])
    rows = torch.arange(context.rank, size, context.world_size)
    sharded: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
            sharded[key] = value[rows]
        elif isinstance(value, Mapping):
            sharded[key] = {name: tensor[rows] for name, tensor in value.items()}
        else:
            sharded[key] = value
    return sharded


def average_gradients(parameters: Iterable[torch.nn.Parameter], context: DistContext) -> None:
    """All-reduce and average the gradients of `parameters` across ranks, in one flat buffer."""
    if not context.enabled:
        return
    with_grad = [p for p in parameters if p.requires_grad]
    for p in with_grad:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in with_grad]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


def broadcast_object(value: Any, context: DistContext) -> Any:
    """Rank 0's `value` on every rank."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


class PeerFailed(RuntimeError):
    """Another rank stopped the run; the message names the rank and its error."""


@contextmanager
def shared_outcome(context: DistContext) -> Iterator[None]:
    """Under torchrun, an error raised inside the block on any rank is raised after it on every
    rank: the same exception type, rebuilt from its message, where that works, else
    `PeerFailed`. Every rank must enter the block; the block must not call collectives itself."""
    if not context.enabled:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as raised:
        error = raised
    described = None if error is None else (type(error).__module__, type(error).__qualname__, str(error))
    outcomes: list[Any] = [None] * context.world_size
    dist.all_gather_object(outcomes, described)
    if error is not None:
        raise error
    for rank, outcome in enumerate(outcomes):
        if outcome is not None:
            raise peer_error(rank, *outcome)


def peer_error(rank: int, module: str, name: str, message: str) -> Exception:
    """The error rank `rank` raised, rebuilt here from its type's name and its message."""
    try:
        kind = getattr(importlib.import_module(module), name)
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind(message)
    except Exception:  # a type that cannot be found or built from its message alone
        pass
    return PeerFailed(f"rank {rank} stopped the run: {name}: {message}")


def agreed_max(value: int, context: DistContext, device: torch.device | None = None) -> int:
    """The largest of every rank's `value` (this rank's alone outside torchrun)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())
