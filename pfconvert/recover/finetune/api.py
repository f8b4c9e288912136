"""Library entry points: fine-tune an artifact, evaluate an artifact.

Example::

    from pfconvert import FinetuneConfig, finetune
    result = finetune("out/mnv2-maxpool", FinetuneConfig(data="fashion-mnist", epochs=2, img_size=64))
    print(result.best)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..._deprecated import deprecated_alias
from ..._files import exclusive
from ..._progress import Phases
from ...conversion.artifact import artifact_data_config, read_summary
from ...data.checks import check_limit
from ...data.datasets import SPLITS, open_split, resolve_source
from ...data.loaders import eval_loader
from ...data.transforms import build_transforms
from ...errors import ArtifactError, DataError, TrainingError
from ..dist import DistContext, env_rank, setup, teardown
from ..metrics import EvalMetrics, evaluate, infer_num_classes
from ..precision import resolve_precision
from ._artifact_io import load_student, load_teacher, save_finetuned
from .checkpoint import CHECKPOINT_DIR, LAST_FILE, load_run_checkpoint
from .config import FinetuneConfig, merge_for_resume
from .progress import Reporter, TextReporter
from .results import FinetuneResult
from .runner import run_finetune

__all__ = ["finetune", "resume_config", "evaluate_artifact", "EvalReport"]


def resume_config(artifact_dir: str | Path, **overrides: Any) -> FinetuneConfig:
    """The config saved in the artifact's last checkpoint, with the allowed ``overrides`` applied.

    Raises:
        CheckpointError: no readable checkpoint.
        TrainingError: an override would change the training trajectory.
    """
    _, saved = load_run_checkpoint(Path(artifact_dir) / CHECKPOINT_DIR / LAST_FILE)
    return merge_for_resume(saved, overrides)


def finetune(artifact_dir: str | Path, config: FinetuneConfig | None = None, *, resume: bool = False,
             overwrite: bool = False, reporter: Reporter | None = None,
             notes: Sequence[str] = ()) -> FinetuneResult:
    """Fine-tune the converted model of an artifact by distillation from its original model.

    Args:
        artifact_dir: directory written by ``pfconvert convert``; results are written into it.
        config: run settings; with ``resume`` and no config, the saved one is used.
        resume: continue the interrupted run from ``checkpoints/last.pt``, exactly.
        overwrite: discard an earlier run's checkpoints and fine-tuned weights.
        reporter: where progress goes; None writes plain lines on stderr (:class:`TextReporter`).
        notes: lines for the reporter once the data has passed its checks (the CLI says which defaults it chose).

    Returns:
        The run summary (also written to ``artifact_dir/finetune.json``).
    """
    path = Path(artifact_dir)
    if config is None:
        if not resume:
            raise TrainingError("a FinetuneConfig is needed (at least data=...) unless resuming")
        config = resume_config(path)
    lock = exclusive(path, "pfconvert finetune") if path.is_dir() and env_rank() == 0 else contextlib.nullcontext()
    with lock:  # one run at a time writes an artifact (under torchrun, rank 0 holds the lock for the job)
        return _finetune(path, config, resume, overwrite, reporter, notes)


def _finetune(path: Path, config: FinetuneConfig, resume: bool, overwrite: bool,
              reporter: Reporter | None, notes: Sequence[str] = ()) -> FinetuneResult:
    student, recipe, _ = load_student(path, weights="converted")
    teacher = (load_teacher(path) if config.kd_weight > 0 or config.feature_weight > 0 or config.eval_teacher
               or config.reconstruct_images > 0 else None)
    data_cfg, _ = artifact_data_config(path, recipe, student, config.img_size, trained=False)
    _check_size(student, recipe.model, data_cfg.input_size, config.img_size)
    warnings = []
    if teacher is not None and recipe.checkpoint is None and (config.kd_weight > 0 or config.feature_weight > 0):
        warnings.append("the original model was converted without a checkpoint (random weights); "
                        "the teacher cannot help. Convert from trained weights, or pass --kd-weight 0")
    return run_finetune(student, teacher, config, path, data_cfg=data_cfg, resume=resume, overwrite=overwrite,
                        reporter=reporter if reporter is not None else TextReporter(), export=save_finetuned,
                        warnings=warnings, identity=recipe.fingerprint(), notes=notes)


@dataclass
class EvalReport:
    """``pfconvert eval`` result: metrics per evaluated model (``student``, optionally ``original``); ``weights`` is
    the weights file the student was loaded from; ``split_description`` says where the split's images come from and
    ``data_config`` how they were fed."""

    artifact: str
    weights: str
    data: str
    split: str
    input_size: tuple[int, int, int]
    metrics: dict[str, EvalMetrics]
    split_description: str = ""
    data_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"artifact": self.artifact, "weights": self.weights, "data": self.data, "split": self.split,
                "split_description": self.split_description, "input_size": list(self.input_size),
                "data_config": self.data_config, "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}

    as_dict = deprecated_alias("as_dict", "to_dict")


def evaluate_artifact(artifact_dir: str | Path, data: str, *, split: str = "test", weights: str = "auto",
                      batch_size: int = 128, img_size: int | None = None, limit: int | None = None,
                      workers: int = 2, device: str = "auto", original: bool = False, seed: int = 0,
                      val_split: float | None = None, progress: Phases | None = None,
                      on_note: Callable[[str], None] | None = None,
                      deploy: Callable[[str, torch.nn.Module, Any], list[tuple[str, torch.nn.Module]]] | None = None
                      ) -> EvalReport:
    """Top-1/top-5 of an artifact's model (fine-tuned weights when present) on a split of ``data``.

    The images are fed as the model was fine-tuned (``finetune.json``) or, before any fine-tune, as recorded at
    conversion (:func:`artifact_data_config`).

    Args:
        artifact_dir: the artifact.
        data: an image folder, a .tar, ``hfds/NAME``, an IDX dir or ``"fashion-mnist"``.
        split: ``"test"`` (the figures), ``"val"`` (the split fine-tuning selected on) or ``"train"``.
        weights: ``auto``, ``converted`` or ``finetuned`` (see :func:`pfconvert.conversion.artifact.load_artifact`).
        batch_size: images per batch.
        img_size: input size (default: the data config's).
        limit: evaluate a fixed random subset of this many images (at least 1; None: all).
        workers: loader worker processes.
        device: ``auto``, ``cpu``, ``cuda``...
        original: also evaluate the original (unconverted) model.
        seed: seed of the ``limit`` subset of the test split (train and val use the fine-tune's seed).
        val_split: share of the training images carved out as ``val`` (default: the fine-tune's, else 0.1), so
            that ``val`` and ``train`` are the fine-tune's splits.
        progress: receives a phase per evaluated model.
        on_note: called with each line of :attr:`EvalReport.notes` (the input and split) before evaluating.
        deploy: ``(name, model, data config) -> [(label, deployed model), ...]``: each model is also evaluated as
            deployed (on a runtime, e.g. OpenVINO int8), its metrics stored under ``"NAME on LABEL"`` next to the
            PyTorch ones (see :func:`pfconvert.deploy.runtime.deploy`). Called on the CPU model, before evaluating.
    """
    if split not in SPLITS:
        raise ArtifactError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    limit = check_limit(limit)
    path = Path(artifact_dir)
    student, recipe, weights_file = load_student(path, weights=weights)
    models = {"student": student} | ({"original": load_teacher(path)} if original else {})
    summary = read_summary(path)
    data_cfg, origin = artifact_data_config(path, recipe, student, img_size, summary=summary)
    _check_size(student, recipe.model, data_cfg.input_size, img_size)
    carve_seed = 0
    if val_split is None:
        val_split, carve_seed = _finetune_split(summary)
    progress = progress if progress is not None else Phases()
    ctx: DistContext = setup(device)
    try:
        precision = resolve_precision(ctx.device)
        split_seed = carve_seed if split in ("train", "val") else seed  # train and val: the fine-tune's carve
        recorded = _finetune_classes(summary)
        dataset = open_split(resolve_source(data), split, limit, split_seed, classes=recorded, val_fraction=val_split,
                             classes_of="the fine-tuned model (finetune.json)")
        num_classes = infer_num_classes(student, data_cfg.input_size)
        if len(dataset.classes) != num_classes:
            empty = dataset.empty_classes()
            hollow = f" (class folder(s) {', '.join(map(repr, empty[:5]))} hold no images)" if empty else ""
            raise DataError(f"the model has {num_classes} classes but the {split} split of {data} has "
                            f"{len(dataset.classes)}{hollow}; evaluate on data with the model's classes")
        dataset.mode = data_cfg.image_mode
        data_cfg, note = data_cfg.for_images(dataset.image_size())
        notes = [f"input: {data_cfg.describe()} ({origin})", *([note] if note else []),
                 f"data: {dataset.description}: {len(dataset)} images"]
        for line in notes if on_note is not None else ():
            on_note(line)
        dataset.transform = build_transforms(data_cfg, "none")[1]
        loader = eval_loader(dataset, batch_size, workers, ctx.rank, ctx.world_size, ctx.device.type == "cuda")
        memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
        metrics = {}
        if deploy is not None:  # each model, then each of its deployments (built on the CPU model, before it moves)
            models = {key: value for name, model in models.items()
                      for key, value in [(name, model), *((f"{name} on {label}", deployed)
                                                          for label, deployed in deploy(name, model, data_cfg))]}
        for name, model in models.items():
            model = model.to(ctx.device, memory_format=memory_format)
            with progress.phase(f"evaluating the {name} model", len(loader.sampler), "images") as advance:  # type: ignore
                metrics[name] = evaluate(model, loader, precision, ctx, advance)
    finally:
        teardown(ctx)
    return EvalReport(str(path), weights_file.name, str(data), split, data_cfg.input_size, metrics,
                      dataset.description, data_cfg.to_dict(), notes)


def _finetune_classes(summary: dict[str, Any]) -> tuple[str, ...] | None:
    """The class names the artifact was fine-tuned on (``finetune.json``), or None when it does not record them."""
    classes = summary.get("classes")
    if isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes):
        return tuple(classes)
    return None


def _check_size(student: torch.nn.Module, name: str | None, size: tuple[int, int, int], img_size: int | None) -> None:
    """Refuse, in one line, an ``img_size`` the artifact's model does not take (a ViT built for 224x224), before any
    data is read (shapes only: see :mod:`pfconvert._inputs`)."""
    from ..._inputs import check_input

    if img_size is not None:
        c = size[0]
        check_input(student, size, what=f"the artifact's model ({name or 'unnamed'})",
                    fix=f"drop --input-size, or convert again for this size (pfconvert convert {name or 'MODEL'} "
                        f"--input-size {c},{img_size},{img_size} --kwarg img_size={img_size})")


def _finetune_split(summary: dict[str, Any]) -> tuple[float, int]:
    """The validation share and seed of the artifact's fine-tune, from its summary (0.1 and 0 when there is none)."""
    config = summary.get("config")
    try:
        return (float(config.get("val_split", 0.1)), int(config.get("seed", 0))) if isinstance(config, dict) else (
            0.1, 0)
    except (TypeError, ValueError):
        return 0.1, 0
