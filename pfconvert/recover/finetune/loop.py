"""The training loop as a generator of events (after spaCy's ``train_while_improving``).

:func:`train_loop` yields a :class:`StepEvent` after every optimisation step and an :class:`EpochEvent` after every
epoch, and after each validation point inside an epoch (:func:`validation_interval`: every ``val_every`` images, or
four points in a run shorter than three epochs; its record's ``event`` is ``val``). It never prints, logs or saves:
the consumer (:mod:`pfconvert.recover.finetune.runner`) does that, and may stop at any event; :class:`RunState` is then
consistent and checkpointing it allows an exact resume. The loop returns when the last epoch is done or ``max_steps``
is reached.
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

__all__ = ["total_steps", "validation_interval", "SHORT_RUN_EPOCHS", "VAL_POINTS", "RunState", "StepEvent",
           "EpochEvent", "NonFiniteLossError", "check_finite", "train_loop"]

LOSS_NAMES = ("loss", "task_loss", "kd_loss")
SHORT_RUN_EPOCHS = 3
"""A run shorter than this many epochs is validated at :data:`VAL_POINTS` points by default, not once per epoch."""
VAL_POINTS = 4


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
    best_step: int = 0
    """Global step of the best validation point (0: the start, or a checkpoint written before mid-epoch points)."""
    lr: float | None = None
    """The peak learning rate the run trains with (None in checkpoints written before it was chosen per run)."""
    lr_choice: dict[str, Any] = field(default_factory=dict)
    """How ``lr`` was chosen: ``method`` (``given``, ``probe``, ``default``) and the probe's measurements."""
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
        """Inverse of :meth:`to_dict`."""
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


def validation_interval(config: FinetuneConfig, steps_per_epoch: int, total: int, world_size: int = 1) -> int | None:
    """Steps between validation points inside the run: ``val_every`` images (rounded to whole steps), else a
    :data:`VAL_POINTS`-th of a run shorter than :data:`SHORT_RUN_EPOCHS` epochs; None: validate every ``eval_every``
    epochs. The end of the run is always validated."""
    if config.val_every is not None:
        return max(1, round(config.val_every / (config.batch_size * world_size)))
    if total < SHORT_RUN_EPOCHS * steps_per_epoch:
        return max(1, math.ceil(total / VAL_POINTS))
    return None


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
        if _mid_epoch_point(config, ctx, run):
            yield _validate_mid_epoch(engine, bundle, config, ctx, run)
            engine.task.train()
        if config.max_steps is not None and run.global_step >= config.max_steps:
            return
        clock = time.perf_counter()


def _mid_epoch_point(config: FinetuneConfig, ctx: DistContext, run: RunState) -> bool:
    """Whether the run, where it stands, is at a validation point inside an epoch that is not validated yet (the
    ends of epochs are :func:`_finish_epoch`'s). After a stop at such a point, a resumed run validates it first."""
    total, _ = run.planned(config)
    interval = validation_interval(config, run.steps_per_epoch, total, ctx.world_size)
    return (interval is not None and 0 < run.step_in_epoch < run.steps_per_epoch and run.global_step < total
            and run.global_step % interval == 0
            and not (run.history and run.history[-1].get("step") == run.global_step))


def _validate(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext, run: RunState,
              event: str, validate: bool) -> EpochEvent:
    """The record of the run where it stands (the epoch's training losses so far, over all processes; the
    validation when ``validate``), appended to the history; the best point so far updated."""
    sync_batchnorm_stats(engine, ctx)
    pin = engine.precision.device.type == "cuda"
    val = None
    if validate:
        val = evaluate(engine.eval_model, eval_loader(bundle.val, config.batch_size, config.workers, ctx.rank,
                                                       ctx.world_size, pin), engine.precision, ctx)
    totals = all_reduce_sum(run.loss_sums, ctx) / ctx.world_size
    steps = max(run.step_in_epoch, 1)
    images = run.step_in_epoch * config.batch_size * ctx.world_size
    record: dict[str, Any] = {
        "event": event, "epoch": run.epoch + 1, "step": run.global_step,
        "images": run.global_step * config.batch_size * ctx.world_size,
        **{f"train_{name}": value / steps for name, value in zip(LOSS_NAMES, totals.tolist())},
        **(val.to_dict("val_") if val is not None else {}), "lr": engine.lr, "seconds": run.epoch_seconds,
        "images_per_s": images / run.epoch_seconds if run.epoch_seconds > 0 else 0.0,
    }
    is_best = val is not None and val.top1 > run.best_top1
    if is_best:
        assert val is not None
        run.best_top1, run.best_epoch, run.best_step = val.top1, run.epoch + 1, run.global_step
    record["best"] = is_best
    run.history.append(record)
    return EpochEvent(record, is_best)


def _validate_mid_epoch(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext,
                        run: RunState) -> EpochEvent:
    """Validate at a point inside an epoch (:func:`validation_interval`); the run stays where it is."""
    return _validate(engine, bundle, config, ctx, run, "val", True)


def _finish_epoch(engine: Engine, bundle: DataBundle, config: FinetuneConfig, ctx: DistContext,
                  run: RunState) -> EpochEvent:
    """Validate (at the run's end; at a validation point of :func:`validation_interval`, or where that is None every
    ``config.eval_every`` epochs), summarise the epoch's training losses over all processes, and advance ``run`` to
    the next epoch."""
    done = run.epoch + 1
    total, epochs = run.planned(config)
    interval = validation_interval(config, run.steps_per_epoch, total, ctx.world_size)
    due = (run.global_step % interval == 0) if interval is not None else done % config.eval_every == 0
    event = _validate(engine, bundle, config, ctx, run, "epoch", due or done == epochs)
    run.epoch, run.step_in_epoch, run.epoch_seconds = run.epoch + 1, 0, 0.0
    run.loss_sums = torch.zeros_like(run.loss_sums)
    return event


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
        if _mid_epoch_point(config, ctx, run):  # resumed after a stop at a validation point, before validating it
            yield _validate_mid_epoch(engine, bundle, config, ctx, run)
        yield from _epoch_steps(engine, bundle, config, ctx, run)
        if run.step_in_epoch < run.steps_per_epoch and run.global_step < total:
            return  # stopped early by max_steps, mid-epoch
        yield _finish_epoch(engine, bundle, config, ctx, run)
