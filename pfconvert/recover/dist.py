"""Process-group plumbing for torchrun: detect the launch, pick the device and backend, reduce metrics.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup` joins the process group with NCCL on CUDA and
gloo on CPU; otherwise it returns a single-process context and nothing here touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

from ..errors import TrainingError

__all__ = ["DistContext", "env_rank", "setup", "teardown", "all_reduce_sum", "all_gather_objects", "broadcast_object",
           "barrier"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local device; ``owns_group`` if :func:`setup` created the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that logs and writes files."""
        return self.rank == 0


def env_rank() -> int:
    """This process's global rank as torchrun announces it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def _resolve_device(device: str, local_rank: int) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; explicit names are checked."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise TrainingError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
    return resolved


def setup(device: str = "auto") -> DistContext:
    """Return the context of this process, joining the torchrun process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = _resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owns = not torch_dist.is_initialized()
    if owns:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistContext(rank, world_size, local_rank, resolved, owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``values`` over processes (a no-op with one process); returns a new tensor on ``values``' device."""
    values = values.clone()
    if ctx.distributed:
        torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Collect one picklable object from every process, in rank order."""
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Return rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op with one process)."""
    if ctx.distributed:
        torch_dist.barrier()
