"""Runs a fine-tuning job: checks, BatchNorm re-estimation, the loop, checkpoints, logs, signals, summary.

:func:`run_finetune` works on plain modules (student, teacher) and an output directory, so it serves artifacts
(:func:`pfconvert.finetune`) and any pair of timm models alike. Only rank 0 writes files or reports.

Files in ``out_dir``: ``checkpoints/last.pt`` (at the start, every epoch, and on Ctrl-C / ``max_steps``),
``checkpoints/best.pt`` (the best validation top-1, the start included: a run that only makes the model worse leaves
the start's weights), ``checkpoints/start.pt`` (the student after reconstruction and BatchNorm re-estimation: a later
run from the same start reads it instead of computing it again, :mod:`~pfconvert.recover.finetune.start_file`),
``finetuned.safetensors`` (the best weights, for :func:`pfconvert.load`), ``metrics.jsonl`` and
``finetune.json``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import distribute_bn
from torch import nn

from ...data.loaders import eval_loader
from ...errors import ArtifactError, CheckpointError, TrainingError, one_line
from ...graph.modules import non_finite_weights
from .. import dist
from ..bn import batchnorm_state, load_batchnorm_state, recalibrate_batchnorm
from ..metrics import evaluate, infer_num_classes
from ..precision import Precision, resolve_precision
from ..refit import BlockFit, reconstruct, reconstruction_capacity
from ._artifact_io import FINETUNED_FILE
from .checkpoint import (
    BEST_FILE,
    CHECKPOINT_DIR,
    LAST_FILE,
    START_FILE,
    capture_rng,
    copy_checkpoint,
    load_run_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .config import FinetuneConfig
from .engine import DEFAULT_LR, Engine, build_engine, engine_state, load_engine_state
from .loaders import DataBundle, check_resume_data, prepare_data, recalibration_loader, steps_per_epoch
from .loop import EpochEvent, NonFiniteLossError, RunState, StepEvent, check_finite, total_steps, train_loop
from .lr_probe import CANDIDATES, probe_lr, probe_steps
from .progress import Reporter
from .results import METRICS_FILE, FinetuneResult, MetricsLog, write_summary
from .signals import StopRequest
from ...data.config import DataConfig
from .start import Accuracy, BatchNormStats, FinetuneStart, ReconstructionStats
from .start_file import load_start, save_start, start_key

__all__ = ["run_finetune"]

Exporter = Callable[[nn.Module, Path], Path]


def run_finetune(student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, out_dir: str | Path, *,
                 data_cfg: DataConfig, resume: bool = False, overwrite: bool = False,
                 reporter: Reporter | None = None, export: Exporter | None = None,
                 warnings: Sequence[str] = (), identity: str | None = None,
                 notes: Sequence[str] = ()) -> FinetuneResult:
    """Fine-tune ``student`` with ``teacher`` as distillation target, writing everything into ``out_dir``.

    Args:
        student: the model to train (CPU, weights loaded).
        teacher: the frozen reference, or None (labels only; then ``kd_weight`` is ignored).
        config: run settings.
        out_dir: where checkpoints, logs and exported weights go.
        data_cfg: how images become the models' input (shared by student and teacher); images smaller than the input
            are resized whole unless it chose a crop (:meth:`DataConfig.for_images`).
        resume: continue from ``out_dir/checkpoints/last.pt``.
        overwrite: start afresh even if ``out_dir`` holds checkpoints of an earlier run.
        reporter: progress receiver (rank 0 only); None reports nothing.
        export: ``(model, out_dir) -> path`` writing the best weights; None skips the export.
        warnings: lines to show once the run has passed its checks (e.g. "the teacher has random weights").
        identity: what the student is (an artifact's recipe fingerprint); checkpoints record it and ``resume``
            refuses a checkpoint of another identity.
        notes: lines to show with the data notes, once the data has passed its checks (e.g. defaults applied).

    Raises:
        ArtifactError: checkpoints exist and neither ``resume`` nor ``overwrite`` is set.
        CheckpointError / DataError / TrainingError: see :mod:`pfconvert.errors`; a non-finite loss keeps the last
            good checkpoint on disk.
    """
    ctx = dist.setup(config.device)
    try:
        job = _Job(student, teacher, config, Path(out_dir), data_cfg, ctx, reporter, export, warnings, identity,
                   notes)
        return job.run(resume=resume, overwrite=overwrite)
    finally:
        dist.teardown(ctx)


def _seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Job:
    """One run's state and the handlers of its events (kept out of the loop, which only yields them)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, out_dir: Path,
                 data_cfg: DataConfig, ctx: dist.DistContext, reporter: Reporter | None,
                 export: Exporter | None, warnings: Sequence[str], identity: str | None = None,
                 notes: Sequence[str] = ()) -> None:
        self.student, self.teacher, self.config, self.out_dir = student, teacher, config, out_dir
        self.data_cfg, self.ctx, self.export, self.warnings = data_cfg, ctx, export, list(warnings)
        self.notes = list(notes)
        self.identity = identity
        self.reporter = reporter if reporter is not None and ctx.is_main else Reporter()
        self.ckpt_dir = out_dir / CHECKPOINT_DIR
        self.log = MetricsLog(out_dir / METRICS_FILE)
        self.precision: Precision = resolve_precision(ctx.device, config.amp, config.channels_last)
        self.bundle: DataBundle | None = None
        self.engine: Engine | None = None
        self.run_state: RunState | None = None
        self.fit_norms: list[str] = []  # BatchNorms whose statistics reconstruction set (kept by re-estimation)
        self.saved_step = -1
        self.exported: Path | None = None

    # -- setup ------------------------------------------------------------------------------------------------------

    def _load_resume_state(self) -> dict[str, Any]:
        """Read ``last.pt`` and check it belongs to a run this config can continue exactly."""
        state, saved = load_run_checkpoint(self.ckpt_dir / LAST_FILE)
        if self.identity is not None and state.get("identity", self.identity) != self.identity:
            raise TrainingError(f"{self.ckpt_dir / LAST_FILE} belongs to another conversion of {self.out_dir} (the "
                                "artifact was re-created since); start again with --overwrite")
        changed = saved.trajectory_diff(self.config)
        if changed:
            key, (old, new) = next(iter(changed.items()))
            raise TrainingError(f"--resume must keep the saved settings, but {key} is {new!r} (saved: {old!r}); "
                                "drop the option or start again with --overwrite")
        if state["world_size"] != self.ctx.world_size:
            raise TrainingError(f"the checkpoint was written by {state['world_size']} process(es), this run has "
                                f"{self.ctx.world_size}; resume with the same number of processes")
        return state

    def _earlier_run_files(self) -> list[Path]:
        """Files an earlier run left that a fresh run would replace (its start, ``start.pt``, is kept: a run from the
        same start reuses it, any other replaces it)."""
        files = sorted(p for p in self.ckpt_dir.glob("*.pt") if p.name != START_FILE) if self.ckpt_dir.is_dir() else []
        return files + [path for path in (self.out_dir / FINETUNED_FILE,) if path.is_file()]

    def _check_out_dir(self, resume: bool, overwrite: bool) -> None:
        """Refuse to start over an earlier run's checkpoints or fine-tuned weights unless asked to."""
        earlier = self._earlier_run_files()
        if earlier and not resume and not overwrite:
            raise ArtifactError(f"{self.out_dir} holds results of an earlier fine-tuning run ({earlier[0].name}); "
                                "pass --resume to continue it or --overwrite to start again")

    def _prepare_data(self) -> DataBundle:
        """Open and check the data against the student's input size and class count."""
        num_classes = infer_num_classes(self.student, self.data_cfg.input_size)
        bundle = prepare_data(self.config, self.data_cfg, num_classes, self.ctx.world_size)
        self.data_cfg = bundle.data_cfg  # as adapted to the images
        return bundle

    def _evaluate(self, model: nn.Module, what: str) -> Accuracy:
        """Validation top-1/top-5 of ``model`` (outside the training loop), shown as a phase."""
        assert self.bundle is not None
        loader = eval_loader(self.bundle.val, self.config.batch_size, self.config.workers, self.ctx.rank,
                             self.ctx.world_size, self.precision.device.type == "cuda")
        with self.reporter.phase(f"validating {what}", len(loader.sampler), "images") as advance:  # type: ignore
            return Accuracy.of(evaluate(model, loader, self.precision, self.ctx, advance))

    def _start(self) -> FinetuneStart:
        """The start of a fresh run: read from ``start.pt`` when an earlier run computed it from the same weights,
        data and start settings (with the generators' states after it, so the run goes on as if computed), else
        computed and written there."""
        assert self.bundle is not None
        data = {"train": self.bundle.fingerprint, "val": self.bundle.val.fingerprint(),
                "config": self.data_cfg.to_dict()}
        key = start_key(self.config, self.student, self.teacher, data=data, identity=self.identity,
                        device=f"{self.precision.device} {self.precision.name}", world_size=self.ctx.world_size)
        path = self.ckpt_dir / START_FILE
        kept = load_start(path, key)
        if kept is not None:
            weights, start, rng = kept
            try:
                self.student.load_state_dict(weights)
                restore_rng(rng[self.ctx.rank])
            except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{path} is damaged ({one_line(exc, 200)}); delete it to compute the start "
                                      "again") from None
            self.reporter.note(f"start (reconstruction, BatchNorm re-estimation, their evaluations) read from {path}: "
                               "an earlier run computed it from the same weights, data and start settings (delete "
                               "the file to compute it again)")
            return start
        start = self._fresh_start()
        rng = dist.all_gather_objects(capture_rng(), self.ctx)
        if self.ctx.is_main:
            save_start(path, key, self.student, start, rng)
        return start

    def _fresh_start(self) -> FinetuneStart:
        """Reconstruction, BatchNorm re-estimation and the start-of-run evaluations (student before/after, teacher)."""
        assert self.bundle is not None
        start = FinetuneStart(converted=self._evaluate(self.student, "the student as converted"))
        if self.config.reconstruct_images > 0:
            self._reconstruct(start)
        if self.config.bn_recalib_images > 0:
            self._recalibrate(start)
        if self.teacher is not None and self.config.eval_teacher:
            start.teacher = self._evaluate(self.teacher, "the teacher (the original model)")
        return start

    def _recalibrate(self, start: FinetuneStart) -> None:
        """BatchNorm re-estimation, kept only if it lowers the loss on the (training) images it was estimated on.

        After a reconstruction, the refit layers' statistics are already the original's, and re-estimating the other
        layers can make the start worse (the fit shrinks output variance on purpose); the check catches that without
        looking at validation data.
        """
        assert self.bundle is not None
        loader = recalibration_loader(self.bundle, self.config, self.ctx.rank, self.ctx.world_size)
        count = len(loader.sampler)  # type: ignore[arg-type]
        saved = batchnorm_state(self.student)
        keep = [self.student.get_submodule(path) for path in self.fit_norms]
        with self.reporter.phase("re-estimating BatchNorm statistics (loss before, statistics, loss after)",
                                 3 * count, "images") as advance:
            loss_before = evaluate(self.student, loader, self.precision, self.ctx, advance).loss
            images = recalibrate_batchnorm(self.student, loader, self.precision, len(loader), keep=keep,
                                           advance=advance)
            if not images:
                return
            if self.ctx.distributed:
                distribute_bn(self.student, self.ctx.world_size, reduce=True)
            loss_after = evaluate(self.student, loader, self.precision, self.ctx, advance).loss
        start.batchnorm = BatchNormStats(images * self.ctx.world_size, round(loss_before, 4), round(loss_after, 4))
        if not start.batchnorm.kept:
            load_batchnorm_state(self.student, saved)
        else:
            start.recalibrated = self._evaluate(self.student, "the student after BatchNorm re-estimation")

    def _reconstruct(self, start: FinetuneStart) -> None:
        """Least-squares refit of the layers after replaced ops (every process fits on the same images)."""
        assert self.bundle is not None
        if self.teacher is None:
            raise TrainingError("reconstruction needs the original model; pass it as the teacher, or set "
                                "reconstruct_images=0")
        count = min(self.config.reconstruct_images, len(self.bundle.train))
        capacity = reconstruction_capacity(self.student, self.teacher, self.data_cfg.input_size, self.precision.device)
        if capacity is not None and count > capacity:
            self.reporter.note(f"reconstruction on {capacity} images instead of {count}: the images and both models' "
                               "activations at one block for more would take over half the free memory (layer by "
                               "layer partial forwards instead would be many times slower)")
            count = max(1, capacity)
        loader = recalibration_loader(self.bundle, self.config, count=count)
        began = time.perf_counter()
        steps = self.config.block_steps
        what = f" and block-wise distillation ({steps} steps per block)" if steps else ""
        blocks: list[BlockFit] = []
        with self.reporter.phase(f"least-squares reconstruction{what} on {len(loader.sampler)} images",  # type: ignore
                                 None, "layers refit") as advance:
            batches = [self.precision.to_device(images) for images, _ in loader]
            fits = reconstruct(self.student, self.teacher, batches, input_size=self.data_cfg.input_size,
                               advance=advance, block_steps=steps, block_lr=self.config.block_lr, blocks=blocks)
        if steps and not blocks:
            self.reporter.warn("block-wise distillation found no block to train (the blocks holding the replaced ops "
                               "do not run one after another); continuing without it")
        self.fit_norms = [fit.norm for fit in fits if fit.norm is not None]
        if not fits:
            self.reporter.warn("reconstruction found no layer to refit (no parameter-free replacement is read by a 1x1 "
                               "conv or Linear); continuing without it")
            return
        start.reconstruction = ReconstructionStats(
            sum(len(b) for b in batches), len(fits), round(sum(f.rel_error_before for f in fits) / len(fits), 4),
            round(sum(f.rel_error for f in fits) / len(fits), 4), round(time.perf_counter() - began, 1), len(blocks),
            round(sum(b.rel_error_before for b in blocks) / len(blocks), 4) if blocks else None,
            round(sum(b.rel_error for b in blocks) / len(blocks), 4) if blocks else None)
        start.reconstructed = self._evaluate(self.student, "the student after reconstruction")

    def _setup(self, resume: bool, overwrite: bool) -> None:
        """Everything before the first step; fails early on bad data, settings or files."""
        self._check_out_dir(resume, overwrite)
        state = self._load_resume_state() if resume else None
        self.bundle = self._prepare_data()
        if state is not None:
            check_resume_data(state.get("data"), self.bundle)
        for note in [*self.bundle.notes, *(self.notes if not resume else [])]:  # before the long start phases
            self.reporter.note(note)
        _seed_everything(self.config.seed + self.ctx.rank)
        memory_format = torch.channels_last if self.precision.channels_last else torch.preserve_format
        for model in (self.student, self.teacher):
            if model is not None:
                model.to(device=self.precision.device, memory_format=memory_format)
        teacher = self.teacher if self.config.kd_weight > 0 or self.config.feature_weight > 0 else None
        start = self._start() if state is None else FinetuneStart()
        bad = [name for model in (self.student, self.teacher) if model is not None
               for name in non_finite_weights(model)]
        if bad:
            raise TrainingError(f"the models hold NaN or infinite weights before training ({len(bad)} tensors, e.g. "
                                f"{bad[0]}); reconvert from a finite checkpoint")
        spe = steps_per_epoch(self.bundle, self.config, self.ctx.world_size)
        total = total_steps(self.config, spe, self.ctx.world_size)
        if state is None:
            lr, lr_choice = self._choose_lr(teacher, total)
        else:  # the rate the run started with (checkpoints written before it was recorded: the config's)
            lr = state["run"].get("lr") if isinstance(state.get("run"), dict) else None
            lr = float(lr) if lr is not None else self.config.lr or DEFAULT_LR
            lr_choice = {}
        self.engine = build_engine(self.student, teacher, self.config, self.precision, self.ctx, spe, total, lr=lr)
        if state is None:
            self.run_state = RunState(steps_per_epoch=spe, total_steps=total, start=start, lr=lr, lr_choice=lr_choice)
            if self.ctx.is_main:  # only now, with data and settings checked, are the earlier run's files dropped
                for path in self._earlier_run_files():
                    path.unlink()
                self.log.reset()
            self._keep_start()
        else:
            if state["run"]["steps_per_epoch"] != spe:
                raise TrainingError(f"the data differ from the saved run's ({spe} steps per epoch, saved: "
                                    f"{state['run']['steps_per_epoch']}); resume with the same data and limits")
            try:
                load_engine_state(self.engine, state["engine"])
                self.run_state = RunState.from_dict(state["run"])
                self.run_state.lr = lr
                restore_rng(state["rng"][self.ctx.rank])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
                raise CheckpointError(f"{self.ckpt_dir / LAST_FILE} does not fit this run ({one_line(exc, 200)}); "
                                      "start again with --overwrite") from None
            self.saved_step = self.run_state.global_step
            if self.ctx.is_main:
                self.log.truncate_after(self.run_state.global_step)
        self._report_start(resumed=state is not None)

    def _choose_lr(self, teacher: nn.Module | None, total: int) -> tuple[float, dict[str, Any]]:
        """The run's peak learning rate and how it was chosen: ``config.lr`` when given, else a validated probe from
        the start (:func:`~pfconvert.recover.finetune.lr_probe.probe_lr`), else :data:`DEFAULT_LR`."""
        assert self.bundle is not None
        if self.config.lr is not None:
            return self.config.lr, {"method": "given", "lr": self.config.lr}
        steps = probe_steps(self.config, total)
        if steps == 0:
            self.reporter.note(f"lr {DEFAULT_LR:.0e}: the default (no --lr, and the probe is off: --lr-probe-images 0)")
            return DEFAULT_LR, {"method": "default", "lr": DEFAULT_LR}
        with self.reporter.phase(f"choosing the learning rate: {len(CANDIDATES)} candidates x {steps} steps from the "
                                 "start", len(CANDIDATES) * steps, "steps") as advance:
            probe = probe_lr(self.student, teacher, self.config, self.bundle, self.precision, self.ctx, total,
                             advance=advance)
        self.reporter.note(probe.describe())
        return probe.lr, probe.to_dict()

    def _keep_start(self) -> None:
        """Make the start (after reconstruction and BatchNorm re-estimation) the best so far, "epoch 0": it is
        checkpointed as ``best.pt`` and exported, and an epoch becomes the best only by beating its top-1. A short run
        that ends below its own start then leaves the start's weights, not worse ones."""
        assert self.run_state is not None
        start = self.run_state.start.record()
        if start is None:
            return
        self.run_state.best_top1, self.run_state.best_epoch, self.run_state.best_step = start["val_top1"], 0, 0
        self._keep_best(self._save())

    def _keep_best(self, last: Path) -> None:
        """On rank 0: copy the checkpoint just saved to ``best.pt`` and export its weights."""
        if self.ctx.is_main:
            copy_checkpoint(last, self.ckpt_dir / BEST_FILE)
            if self.export is not None:
                assert self.engine is not None
                self.exported = self.export(self.engine.eval_model, self.out_dir)

    def _report_start(self, resumed: bool) -> None:
        """Tell the reporter and the log where the run starts; warn about a teacher that cannot help."""
        assert self.bundle is not None and self.run_state is not None
        run = self.run_state
        info = {"device": str(self.precision.device), "precision": self.precision.name,
                "processes": self.ctx.world_size, "train images": len(self.bundle.train),
                "val images": len(self.bundle.val), "steps/epoch": run.steps_per_epoch,
                "epochs": run.planned(self.config)[1], "lr": f"{run.lr:.1e}" if run.lr is not None else None,
                "resumed at": f"epoch {run.epoch + 1} step {run.step_in_epoch}" if resumed else None}
        self.reporter.start(info)
        for warning in self.warnings if not resumed else []:
            self.reporter.warn(warning)
        if self.ctx.is_main:
            self.log.write({"event": "resume" if resumed else "start", "step": run.global_step,
                            **run.start.to_dict()})
        if not resumed:
            self._report_start_accuracies(run.start)

    def _report_start_accuracies(self, start: FinetuneStart) -> None:
        """Notes of the start-of-run accuracies; a warning when the teacher is no better than chance."""
        assert self.bundle is not None
        chance = 100.0 / max(len(self.bundle.classes), 1)
        if start.teacher is not None and self.config.kd_weight > 0 and start.teacher.top1 < 1.5 * chance:
            self.reporter.warn(f"the teacher scores {start.teacher.top1:.1f}% top-1 (chance {chance:.1f}%): "
                               "distilling from it will not help; was the original trained on these classes? Consider "
                               "--kd-weight 0")
        fit, bn = start.reconstruction, start.batchnorm
        rows = [("teacher (original model)", start.teacher), ("student as converted", start.converted)]
        if fit is not None:
            rows.append((f"student after least-squares reconstruction of {fit.layers} layers on {fit.images} images "
                         f"(output error {fit.rel_error_before:.0%} -> {fit.rel_error_after:.0%}"
                         + (f", {fit.seconds:.0f} s)" if fit.seconds is not None else ")")
                         + (f" and block-wise distillation of {fit.blocks} blocks (block output error "
                            f"{fit.block_error_before:.0%} -> {fit.block_error_after:.0%})" if fit.blocks else ""),
                         start.reconstructed))
        if bn is not None:
            rows.append((f"student after BatchNorm re-estimation on {bn.images} images", start.recalibrated))
        for label, acc in rows:
            if acc is not None:
                self.reporter.note(f"{label}: val top-1 {acc.top1:.2f}% top-5 {acc.top5:.2f}%")
        if bn is not None and not bn.kept:
            self.reporter.note(f"BatchNorm re-estimation undone: it raised the loss on its {bn.images} training images "
                               f"from {bn.loss_before:.3f} to {bn.loss_after:.3f}")

    # -- events -----------------------------------------------------------------------------------------------------

    def _save(self) -> Path:
        """Write ``last.pt`` (all ranks take part: RNG states are gathered from every process).

        The losses are checked first (on GPUs the loop checks them only every few steps), so a checkpoint never
        holds weights that a NaN has reached.
        """
        assert self.engine is not None and self.run_state is not None
        check_finite(self.run_state, self.ctx, self.engine.weights)
        rng = dist.all_gather_objects(capture_rng(), self.ctx)
        path = self.ckpt_dir / LAST_FILE
        if self.ctx.is_main:
            save_checkpoint({"config": self.config.model_dump_json(), "run": self.run_state.to_dict(),
                             "engine": engine_state(self.engine), "rng": rng, "world_size": self.ctx.world_size,
                             "identity": self.identity, "data": self.bundle.fingerprint if self.bundle else None},
                            path)
        dist.barrier(self.ctx)
        self.saved_step = self.run_state.global_step
        return path

    def _on_epoch(self, event: EpochEvent) -> None:
        """Checkpoint at every epoch's end and validation point; keep the best one and export its weights."""
        assert self.engine is not None
        last = self._save()
        if self.ctx.is_main:
            self.log.write(event.record)
        if event.is_best:
            self._keep_best(last)
        self.reporter.epoch(event)

    def _on_step(self, event: StepEvent) -> None:
        """Report, and log a step record every ``log_every`` steps."""
        self.reporter.step(event)
        if self.ctx.is_main and event.global_step % self.config.log_every == 0:
            self.log.write({"event": "step", "epoch": event.epoch + 1, "step": event.global_step,
                            **event.loss_values(), "lr": event.lr,
                            "images_per_s": event.images / event.seconds if event.seconds > 0 else 0.0})

    def _stop_requested(self, stop: StopRequest, event: StepEvent) -> bool:
        """True when any process received Ctrl-C/SIGTERM (agreed on by all processes, so they stop together)."""
        if not self.ctx.distributed:
            return stop.requested
        if self.precision.device.type == "cuda" and event.global_step % 10 and event.step != event.steps_per_epoch:
            return False  # agreeing costs a synchronisation: on GPUs do it every 10 steps
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.precision.device)
        return bool(dist.all_reduce_sum(flag, self.ctx).item() > 0)

    def _consume(self, stop: StopRequest) -> str:
        """Handle the loop's events until it ends or a stop is requested; returns the final status."""
        assert self.engine is not None and self.bundle is not None and self.run_state is not None
        events = train_loop(self.engine, self.bundle, self.config, self.ctx, self.run_state)
        try:
            for event in events:
                if isinstance(event, EpochEvent):
                    self._on_epoch(event)
                    continue
                self._on_step(event)
                if self._stop_requested(stop, event):
                    self._save()
                    self.reporter.notice(f"stopped by {stop.signal_name or 'a signal'} at epoch {event.epoch + 1}, "
                                       f"step {event.step}: checkpoint saved to {self.ckpt_dir / LAST_FILE}; "
                                       "continue with --resume")
                    return "interrupted"
        finally:
            events.close()
        if self.run_state.epoch >= self.run_state.planned(self.config)[1]:
            return "completed"
        if self.saved_step != self.run_state.global_step:
            self._save()
        self.reporter.notice(f"stopped at --max-steps {self.config.max_steps} (epoch {self.run_state.epoch + 1}, step "
                           f"{self.run_state.step_in_epoch}): checkpoint saved to {self.ckpt_dir / LAST_FILE}; "
                           "continue with --resume")
        return "stopped"

    def _train(self) -> str:
        """Train with Ctrl-C/SIGTERM turned into a clean stop; a non-finite loss names the checkpoint kept."""
        with StopRequest() as stop:
            try:
                return self._consume(stop)
            except NonFiniteLossError as exc:
                raise TrainingError(f"{exc}; {self._kept()}") from None

    def _kept(self) -> str:
        """What a run stopped by non-finite values leaves: the last good checkpoint and the exported best weights."""
        kept = self.ckpt_dir / LAST_FILE
        if not kept.exists() or self.saved_step < 0:
            return "no checkpoint was written yet"
        text = f"last good checkpoint kept: {kept} (global step {self.saved_step})"
        if self.exported is not None and self.run_state is not None:
            run = self.run_state
            best = ("the start" if run.best_epoch == 0 else f"epoch {run.best_epoch}"
                    + (f", step {run.best_step}" if run.best_step else ""))
            text += f"; {self.exported} holds the best finite weights ({best})"
        return text

    # -- result -----------------------------------------------------------------------------------------------------

    def _result(self, status: str) -> FinetuneResult:
        """Summarise the run from its state and history."""
        assert self.run_state is not None
        run, history = self.run_state, self.run_state.history
        best = (run.start.record() if run.best_epoch == 0 else
                next((rec for rec in history if "val_top1" in rec and (
                    rec["step"] == run.best_step if run.best_step else rec["epoch"] == run.best_epoch)), None))
        images = run.global_step * self.config.batch_size * self.ctx.world_size
        return FinetuneResult(
            status=status, artifact=str(self.out_dir), epochs=run.planned(self.config)[1], epochs_done=run.epoch,
            global_step=run.global_step, total_steps=run.planned(self.config)[0],
            world_size=self.ctx.world_size, device=str(self.precision.device), precision=self.precision.name,
            train_seconds=run.train_seconds, images_per_s=images / run.train_seconds if run.train_seconds else 0.0,
            start=run.start, best=best, final=next((rec for rec in reversed(history) if "val_top1" in rec), None),
            finetuned_weights=str(self.exported) if self.exported else _existing(self.out_dir / FINETUNED_FILE),
            checkpoint=str(self.ckpt_dir / LAST_FILE), metrics_log=str(self.log.path),
            config=self.config.model_dump(), data_config=self.data_cfg.to_dict(), lr=run.lr,
            lr_choice=run.lr_choice,
            splits={"train": self.bundle.train.description, "val": self.bundle.val.description}
            if self.bundle is not None else {},
            classes=list(self.bundle.classes) if self.bundle is not None else [],
        )

    def run(self, resume: bool, overwrite: bool) -> FinetuneResult:
        """Set up, train, summarise; the summary is written to ``finetune.json`` by rank 0."""
        try:
            self._setup(resume, overwrite)
            status = self._train()
            assert self.run_state is not None
            start = self.run_state.start.record()
            if self.run_state.best_epoch == 0 and start is not None and self.run_state.epoch > 0:
                self.reporter.warn(f"no validation point beat the start ({start['val_top1']:.2f}% top-1): the exported "
                                   "weights are the start's; try a lower --lr")
        finally:
            self.reporter.close()
        result = self._result(status)
        if self.ctx.is_main:
            write_summary(result, self.out_dir)
        return result


def _existing(path: Path) -> str | None:
    """``str(path)`` if the file exists, else None."""
    return str(path) if path.is_file() else None
