"""Data-parallel training over `torch.distributed` (gloo on CPU, nccl on GPU), started by torchrun.

Every rank holds the whole model; each global batch is split row-wise across the ranks and the
gradients are averaged with an all-reduce before the optimizer step, so one step of N ranks
equals one step of a single process on the same global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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
