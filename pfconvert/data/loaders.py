"""DataLoaders that never draw from the global RNG, leave Ctrl-C to the main process, shard evaluation exactly, and
raise a worker's pfconvert error as the one line it was (torch re-raises it with the worker's whole traceback)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import PfconvertError

__all__ = ["make_loader", "eval_loader", "unwrap_worker_error"]

_WORKER_MARK = "in DataLoader worker process"


def unwrap_worker_error(exc: PfconvertError) -> PfconvertError:
    """The error a loader worker raised, as it was raised there: torch re-raises it in the main process as the same
    type with the message ``Caught X in DataLoader worker process N. Original Traceback ...: module.X: message``;
    this returns ``X(message)`` (``exc`` itself when it did not come from a worker)."""
    text = str(exc)
    if _WORKER_MARK not in text.partition("\n")[0]:
        return exc
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    message = last.strip()[len(prefix):] if last.strip().startswith(prefix) else last.strip()
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - a subclass with another signature: keep torch's error
        return exc


class _Loader(DataLoader):
    """A DataLoader whose iteration raises a worker's pfconvert error as one line (:func:`unwrap_worker_error`)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        iterator = super().__iter__()
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except PfconvertError as exc:
                raise unwrap_worker_error(exc) from None
            yield batch


def _ignore_sigint(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which saves a checkpoint and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, sampler: Sampler[int], batch_size: int, workers: int, drop_last: bool,
                pin_memory: bool, seed: int) -> DataLoader:
    """A DataLoader whose worker seeding draws from its own generator, never from the global RNG.

    Workers are forked, as torch does by default on Linux, unless OpenVINO has run in this process (a latency
    measurement or an evaluation on its runtime): its thread pool does not survive a fork, and forked workers then
    crashed the whole process (seen with ``report`` then ``finetune`` in one Python session). Then the workers start
    from a fork server, a process started fresh."""
    context = "forkserver" if workers and _forking_is_unsafe() else None
    return _Loader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=pin_memory, worker_init_fn=_ignore_sigint if workers else None,
        generator=torch.Generator().manual_seed(seed), persistent_workers=False, multiprocessing_context=context,
    )


def _forking_is_unsafe() -> bool:
    """Whether a runtime whose threads do not survive ``fork`` (OpenVINO's) is loaded in this process."""
    return "openvino" in sys.modules


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, rank: int = 0, world_size: int = 1,
                pin_memory: bool = False) -> DataLoader:
    """A loader over this process's shard of ``dataset`` (every sample exactly once across processes)."""
    shard = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    return make_loader(dataset, shard, batch_size, workers, False, pin_memory, 0)  # type: ignore[arg-type]
