"""Multi-process data-parallel training on PyTorch's own engine (torchrun + DDP).

`torchrun --nproc_per_node 2 -m vla3d_ros.cli train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `init_distributed` reads them (or takes explicit values, as the
spawn-based test does) and starts a process group: gloo on CPU, nccl when every rank has a GPU.
Each rank reads a disjoint shard of every epoch's permutation (see `data.dataset.ChunkSampler`),
DDP averages gradients, so the replicas' parameters stay identical step after step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(*, rank: int | None = None, world_size: int | None = None,
                     init_method: str | None = None, device: str | None = None) -> DistributedContext:
    """Start the process group when more than one process takes part; else a single-process context."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method=init_method or "env://",
                                rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def wrap_for_training(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """DDP wrapper across ranks (identity when single-process).

    find_unused_parameters: ablation switches and stage-2 freezing leave parts of the policy out
    of the graph, and which parts depends on the preset, so let DDP discover them per step.
    """
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def mean_across_ranks(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average logged scalars over ranks so rank 0's CSV describes the whole batch."""
    if not context.enabled or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= context.world_size
    return dict(zip(keys, packed.tolist()))


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
