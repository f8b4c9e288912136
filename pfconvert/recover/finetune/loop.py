"""The training loop as a generator of events (after spaCy's ``train_while_improving``).

:func:`train_loop` yields a :class:`StepEvent` after every optimisation step and an :class:`EpochEvent` after every
epoch. It never prints, logs or saves: the consumer (:mod:`pfconvert.recover.finetune.runner`) does that, and may stop
at any event; :class:`RunState` is then consistent and checkpointing it allows an exact resume. The loop returns when
the last epoch is done or ``max_steps`` is reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..._deprecated import deprecated_alias
from ...data.loaders import eval_loader
from ...errors import TrainingError
from ...graph.modules import non_finite_weights
from ..dist import DistContext, all_reduce_sum
from ..metrics import evaluate
from .config import FinetuneConfig
from .engine import Engine, sync_batchnorm_stats, train_step
from .loaders import DataBundle, train_loader
from .start import FinetuneStart

__all__ = ["total_steps", "RunState", "StepEvent", "EpochEvent", "NonFiniteLossError", "check_finite", "train_loop"]

LOSS_NAMES = ("loss", "task_loss", "kd_loss")


class NonFiniteLossError(TrainingError):
    """The loss or the weights became NaN or infinite."""


@dataclass
class RunState:
    """Where a run is: what a checkpoint needs besides the engine state and the RNGs (primitives only)."""

    steps_per_epoch: int
    total_steps: int = 0
    """Steps of the whole run (0 in checkpoints written before ``train_images``: epochs x steps per epoch)."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    loss_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    start: FinetuneStart = field(default_factory=FinetuneStart)

    def to_dict(self) -> dict[str, Any]:
        """Checkpointable form: primitives and tensors only (the loss sums of the current epoch copied to the CPU)."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**state, "loss_sums": self.loss_sums.detach().cpu().clone(), "start": self.start.to_dict()}

    as_dict = deprecated_alias("as_dict", "to_dict")

    def planned(self, config: FinetuneConfig) -> tuple[int, int]:
        """``(total steps, epochs)`` of the run: the last epoch is partial when ``train_images`` ends it early."""
        total = self.total_steps or config.epochs * self.steps_per_epoch
        return total, math.ceil(total / max(self.steps_per_epoch, 1))

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunState:
        """Inverse of :meth:`as_dict`."""
        return cls(**{**state, "start": FinetuneStart.from_dict(state.get("start"))})


@dataclass(frozen=True)
class StepEvent:
    """One optimisation step done. ``losses`` is this process's ``[loss, task_loss, kd_loss]`` (on the device)."""

    epoch: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    images: int
    seconds: float
    lr: float
    losses: torch.Tensor

    def loss_values(self) -> dict[str, float]:
        """The losses as floats (synchronises with the device)."""
        return dict(zip(LOSS_NAMES, self.losses.tolist()))


@dataclass(frozen=True)
class EpochEvent:
    """An epoch finished; ``record`` is its metrics line (with ``val_*`` fields when the epoch was validated);
    ``is_best`` if it was validated and top-1 improved."""

    record: dict[str, Any]
    is_best: bool


def total_steps(config: FinetuneConfig, steps_per_epoch: int, world_size: int = 1) -> int:
    """Steps of a run: ``epochs`` passes over the training split, or ``train_images`` images in all."""
    if config.train_images is None:
        return config.epochs * steps_per_epoch
    return max(1, math.ceil(config.train_images / (config.batch_size * world_size)))


def check_finite(run: RunState, ctx: DistContext, models: Sequence[nn.Module] = ()) -> None:
    """Raise :class:`NonFiniteLossError` if a loss since the epoch start, or a weight of ``models`` (parameters and
    BatchNorm statistics), is NaN/inf on any process.

    A NaN or inf poisons the running sum, so checking the sum covers every step since the last check; an update can
    also leave the weights non-finite while the loss that produced it was finite (a huge learning rate). Under DDP
    the verdict is all-reduced, so that every process stops at the same step instead of some waiting for the others.
    """
    weights = [name for model in models for name in non_finite_weights(model)]
    loss_bad = bool((~torch.isfinite(run.loss_sums)).any())
    bad = torch.tensor([float(loss_bad), float(bool(weights))], dtype=torch.float64, device=run.loss_sums.device)
    loss_any, weights_any = (all_reduce_sum(bad, ctx) > 0).tolist()
    if not (loss_any or weights_any):
        return
    what = "the loss" if loss_any else "the weights"
    example = f" ({len(weights)} tensors, e.g. {weights[0]})" if weights else ""
    raise NonFiniteLossError(f"{what} became non-finite at epoch {run.epoch + 1}, step {run.step_in_epoch} (global "
                             f"step {run.global_step}){example}; lower --lr or set --grad-clip")


def _epoch_steps(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext,
                 run: RunState) -> Iterator[StepEvent]:
    """Run the remaining steps of ``run.epoch``, yielding after each; stops early at ``max_steps``, and at the run's
    last step (a partial last epoch)."""
    total, _ = run.planned(config)
    pin = engine.precision.device.type == "cuda"
    loader = train_loader(bundle, config, run.epoch, ctx.rank, ctx.world_size, run.step_in_epoch, pin)
    check_every = 1 if engine.precision.device.type == "cpu" else 10  # a check synchronises a GPU
    run.loss_sums = run.loss_sums.to(engine.precision.device)
    engine.task.train()
    clock = time.perf_counter()
    for images, targets in loader:
        if run.global_step >= total:
            return
        losses = train_step(engine, images, targets, run.global_step + 1)
        run.loss_sums += losses.to(torch.float64)
        run.step_in_epoch += 1
        run.global_step += 1
        if run.global_step % check_every == 0 or run.step_in_epoch == run.steps_per_epoch or run.global_step == total:
            check_finite(run, ctx, engine.weights)
        seconds = time.perf_counter() - clock
        run.epoch_seconds += seconds
        run.train_seconds += seconds
        yield StepEvent(run.epoch, run.step_in_epoch, run.steps_per_epoch, run.global_step, total,
                        len(targets) * ctx.world_size, seconds, engine.lr, losses)
        if config.max_steps is not None and run.global_step >= config.max_steps:
            return
        clock = time.perf_counter()


def _finish_epoch(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext,
                  run: RunState) -> EpochEvent:
    """Validate (every ``config.eval_every`` epochs and after the last), summarise the epoch's training losses over
    all processes, and advance ``run`` to the next epoch."""
    sync_batchnorm_stats(engine, ctx)
    pin = engine.precision.device.type == "cuda"
    done = run.epoch + 1
    val = None
    if done % config.eval_every == 0 or done == run.planned(config)[1]:
        val = evaluate(engine.eval_model, eval_loader(bundle.val, config.batch_size, config.workers, ctx.rank,
                                                       ctx.world_size, pin), engine.precision, ctx)
    totals = all_reduce_sum(run.loss_sums, ctx) / ctx.world_size
    steps = max(run.step_in_epoch, 1)
    images = run.step_in_epoch * config.batch_size * ctx.world_size
    record: dict[str, Any] = {
        "event": "epoch", "epoch": done, "step": run.global_step,
        **{f"train_{name}": value / steps for name, value in zip(LOSS_NAMES, totals.tolist())},
        **(val.to_dict("val_") if val is not None else {}), "lr": engine.lr, "seconds": run.epoch_seconds,
        "images_per_s": images / run.epoch_seconds if run.epoch_seconds > 0 else 0.0,
    }
    is_best = val is not None and val.top1 > run.best_top1
    if is_best:
        run.best_top1, run.best_epoch = val.top1, done
    record["best"] = is_best
    run.history.append(record)
    run.epoch, run.step_in_epoch, run.epoch_seconds = run.epoch + 1, 0, 0.0
    run.loss_sums = torch.zeros_like(run.loss_sums)
    return EpochEvent(record, is_best)


def train_loop(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext,
               run: RunState) -> Iterator[StepEvent | EpochEvent]:
    """Train from ``run``'s position to the end of ``config.epochs`` (or ``config.max_steps``), yielding events.

    Raises:
        NonFiniteLossError: a loss became NaN or infinite (weights in memory are then unusable; do not save them).
    """
    total, epochs = run.planned(config)
    while run.epoch < epochs:
        if config.max_steps is not None and run.global_step >= config.max_steps:
            return
        yield from _epoch_steps(engine, bundle, config, ctx, run)
        if run.step_in_epoch < run.steps_per_epoch and run.global_step < total:
            return  # stopped early by max_steps, mid-epoch
        yield _finish_epoch(engine, bundle, config, ctx, run)
