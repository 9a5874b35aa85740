"""Data-parallel helpers for runs started by torchrun: process group, sharding, averaging across ranks.

Outside a process group (no WORLD_SIZE, or WORLD_SIZE=1) every helper is a cheap no-op, so the same
training code runs unchanged on one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T", torch.Tensor, list)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> int:
    """Joins the process group torchrun describes in the environment and returns the world size.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; uses nccl when CUDA is available
    (and pins this process to cuda:LOCAL_RANK), gloo otherwise. A no-op returning 1 when WORLD_SIZE is
    unset or 1; returns the existing group's size when one is already set up.
    """
    if is_initialized():
        return dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 1
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {', '.join(missing)} not set; start the run with torchrun")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    dist.init_process_group(backend, init_method="env://", rank=int(os.environ["RANK"]), world_size=size)
    return size


def local_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if is_initialized() else 1


_rank, _world = rank, world  # shard's arguments shadow the public names


def is_main() -> bool:
    """True on rank 0 and outside a process group: the process that writes files and logs."""
    return _rank() == 0


def shard(indices: T, rank: int | None = None, world: int | None = None) -> T:
    """This rank's share of an epoch's sample order: every `world`-th index, starting at `rank`.

    The order is first padded by wrapping around to a multiple of `world`, so all ranks get the same
    number of samples (and so run the same number of steps: DDP hangs otherwise). Striding, as
    DistributedSampler does, makes rank r's k-th batch of size b one part of the single-process k-th
    batch of size b * world.
    """
    rank = _rank() if rank is None else rank
    world = _world() if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of {world}")
    n = len(indices)
    if n == 0:
        return indices[:0]
    total = -(-n // world) * world
    reps = -(-total // n)
    padded = indices.repeat(reps)[:total] if isinstance(indices, torch.Tensor) else (list(indices) * reps)[:total]
    return padded[rank:total:world]


def _comm_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo works on CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Waits until every rank gets here (nothing outside a process group)."""
    if _world() > 1:
        dist.barrier()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (every rank must pass the same keys, in the same order)."""
    if _world() == 1:
        return dict(values)
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return {k: v / _world() for k, v in zip(keys, t.tolist(), strict=True)}


def broadcast_from_main(values: Sequence[float]) -> list[float]:
    """Rank 0's numbers on every rank: the way ranks agree on a decision (e.g. to stop early)."""
    if _world() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src=0)
    return t.tolist()


def all_reduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Averages gradients over ranks by hand, for backward passes run under DDP's no_sync()."""
    n = _world()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(n)


def gather_with_grad(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's `rows`, concatenated in rank order, with gradient: the backward pass hands each rank the
    sum over all ranks of the gradient of its own rows (torch.distributed.nn.all_gather, as OpenCLIP's
    gather_with_grad). Every rank must pass the same shape. Outside a process group, `rows` itself."""
    if _world() == 1:
        return rows
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(rows), dim=0)
