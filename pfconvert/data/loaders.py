"""DataLoaders that never draw from the global RNG, leave Ctrl-C to the main process, and shard evaluation exactly."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["make_loader", "eval_loader"]


def _ignore_sigint(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which saves a checkpoint and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, sampler: Sampler[int], batch_size: int, workers: int, drop_last: bool,
                pin_memory: bool, seed: int) -> DataLoader:
    """A DataLoader whose worker seeding draws from its own generator, never from the global RNG."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=pin_memory, worker_init_fn=_ignore_sigint if workers else None,
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
    )


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, rank: int = 0, world_size: int = 1,
                pin_memory: bool = False) -> DataLoader:
    """A loader over this process's shard of ``dataset`` (every sample exactly once across processes)."""
    shard = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    return make_loader(dataset, shard, batch_size, workers, False, pin_memory, 0)  # type: ignore[arg-type]
