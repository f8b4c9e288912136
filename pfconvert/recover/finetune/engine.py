"""The training engine: student/teacher placement, timm optimizer + scheduler, AMP scaler, EMA, DDP, one step.

:func:`build_engine` assembles the pieces from a :class:`~pfconvert.recover.finetune.config.FinetuneConfig` using timm's
factories (``create_optimizer_v2``, ``create_scheduler_v2`` stepped per update with warm-up, ``ModelEmaV3``);
:func:`train_step` runs one optimisation step; :func:`engine_state` / :func:`load_engine_state` give the part of a
checkpoint that belongs to the engine. Nothing here loops over data, prints or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3, distribute_bn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...errors import TrainingError
from ..dist import DistContext
from ..precision import Precision
from .config import FinetuneConfig
from .distill import DistillationTask

__all__ = ["DEFAULT_LR", "Engine", "build_engine", "train_step", "engine_state", "load_engine_state",
           "sync_batchnorm_stats"]


@dataclass
class Engine:
    """Everything one training step touches. ``student`` is the plain module; ``task.student`` may wrap it."""

    task: DistillationTask
    student: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    scaler: torch.amp.GradScaler | None
    ema: ModelEmaV3 | None
    precision: Precision
    grad_clip: float | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated and exported: the EMA copy when EMA is on, else the student."""
        return self.ema.module if self.ema is not None else self.student

    @property
    def weights(self) -> list[nn.Module]:
        """Every model whose weights a step changes: the student, and its EMA copy when EMA is on."""
        return [self.student] + ([self.ema.module] if self.ema is not None else [])

    @property
    def lr(self) -> float:
        """Current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])


DEFAULT_LR = 1e-3
"""The peak learning rate when none is given and no probe chooses one (``lr_probe_images`` 0)."""


def _optimizer(student: nn.Module, config: FinetuneConfig, lr: float) -> torch.optim.Optimizer:
    """timm optimizer by name; biases and norm parameters get no weight decay."""
    try:
        return create_optimizer_v2(student, opt=config.opt, lr=lr, weight_decay=config.weight_decay,
                                   momentum=config.momentum)
    except (AssertionError, ValueError) as exc:
        raise TrainingError(f"cannot create optimizer {config.opt!r}: {exc}; see timm.optim.list_optimizers()") from exc


def _scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig, steps_per_epoch: int,
               total_steps: int) -> Scheduler | None:
    """timm scheduler stepped per update over the run's ``total_steps``, with linear warm-up over ``warmup_share`` of
    them (or, where the deprecated ``warmup_epochs`` is set, over that many epochs of ``steps_per_epoch`` updates)."""
    epochs, per_epoch = config.epochs, steps_per_epoch
    if total_steps != config.epochs * steps_per_epoch:  # a budget in images: one "epoch" of total_steps updates
        epochs, per_epoch = 1, total_steps
    if config.warmup_epochs is not None:
        warmup = config.warmup_epochs * steps_per_epoch / per_epoch
    else:
        warmup = config.warmup_share * total_steps / per_epoch  # in timm's "epochs" of per_epoch updates
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=config.sched, num_epochs=epochs, warmup_epochs=warmup, warmup_lr=config.warmup_lr,
            min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=per_epoch,
        )
    except (AssertionError, ValueError) as exc:
        raise TrainingError(f"cannot create scheduler {config.sched!r}: {exc}") from exc
    return scheduler


def build_engine(student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, precision: Precision,
                 ctx: DistContext, steps_per_epoch: int, total_steps: int | None = None,
                 lr: float | None = None) -> Engine:
    """Place the models, build optimizer/scheduler/scaler/EMA, then compile and DDP-wrap the student if asked.

    ``lr`` is the peak learning rate (default: ``config.lr``, else :data:`DEFAULT_LR`).
    """
    memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
    student.to(device=precision.device, memory_format=memory_format)
    if teacher is not None:
        teacher.to(device=precision.device, memory_format=memory_format)
    task = DistillationTask(student, teacher, config.temperature, config.kd_weight, config.task_weight,
                            config.smoothing, config.freeze_bn, config.feature_weight)
    optimizer = _optimizer(student, config, lr if lr is not None else config.lr or DEFAULT_LR)
    engine = Engine(
        task=task, student=student, optimizer=optimizer, scheduler=_scheduler(optimizer, config, steps_per_epoch,
                                                                     total_steps or config.epochs * steps_per_epoch),
        scaler=precision.grad_scaler(), ema=ModelEmaV3(student, decay=config.ema_decay) if config.ema else None,
        precision=precision, grad_clip=config.grad_clip,
    )
    if config.compile:
        task.student = torch.compile(student, backend=config.compile_backend)
        if task.teacher is not None:
            task.teacher = torch.compile(task.teacher, backend=config.compile_backend)
    if ctx.distributed:
        device_ids = [precision.device.index] if precision.device.type == "cuda" else None
        task.student = DistributedDataParallel(task.student, device_ids=device_ids)
    return engine


def train_step(engine: Engine, images: torch.Tensor, targets: torch.Tensor, global_step: int) -> torch.Tensor:
    """One optimisation step; returns the detached ``[loss, task_loss, kd_loss]`` (not synchronised).

    ``global_step`` is the number of steps done *after* this one; the scheduler and EMA are stepped with it.
    """
    precision, optimizer = engine.precision, engine.optimizer
    images, targets = precision.to_device(images), targets.to(precision.device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        out = engine.task(images, targets)
    loss = out["loss"]
    if engine.scaler is not None:
        engine.scaler.scale(loss).backward()
        if engine.grad_clip is not None:
            engine.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(engine.student.parameters(), engine.grad_clip)
        engine.scaler.step(optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        if engine.grad_clip is not None:
            nn.utils.clip_grad_norm_(engine.student.parameters(), engine.grad_clip)
        optimizer.step()
    if engine.ema is not None:
        engine.ema.update(engine.student, step=global_step)
    if engine.scheduler is not None:
        engine.scheduler.step_update(num_updates=global_step)
    return torch.stack([loss.detach().float(), out["task_loss"].float(), out["kd_loss"].float()])


def sync_batchnorm_stats(engine: Engine, ctx: DistContext) -> None:
    """Average BatchNorm running statistics over processes, so every rank validates the same model."""
    if ctx.distributed:
        distribute_bn(engine.student, ctx.world_size, reduce=True)
        if engine.ema is not None:
            distribute_bn(engine.ema.module, ctx.world_size, reduce=True)


def engine_state(engine: Engine) -> dict[str, Any]:
    """The engine's share of a checkpoint: weights, optimizer, scheduler, scaler and EMA states."""
    return {
        "model": engine.student.state_dict(),
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict() if engine.scheduler is not None else None,
        "scaler": engine.scaler.state_dict() if engine.scaler is not None else None,
        "ema": engine.ema.state_dict() if engine.ema is not None else None,
    }


def load_engine_state(engine: Engine, state: dict[str, Any]) -> None:
    """Restore what :func:`engine_state` saved (weights strictly).

    Raises:
        TrainingError: the checkpoint's parts do not fit this engine (e.g. EMA was switched on or off).
    """
    engine.student.load_state_dict(state["model"], strict=True)
    engine.optimizer.load_state_dict(state["optimizer"])
    if engine.scheduler is not None and state["scheduler"] is not None:
        engine.scheduler.load_state_dict(state["scheduler"])
    if engine.scaler is not None and state["scaler"] is not None:
        engine.scaler.load_state_dict(state["scaler"])
    if (engine.ema is None) != (state["ema"] is None):
        raise TrainingError("the checkpoint's EMA setting differs from this run's; resume with the same --ema")
    if engine.ema is not None:
        engine.ema.load_state_dict(state["ema"])
