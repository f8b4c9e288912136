"""Library entry points: fine-tune an artifact, evaluate an artifact.

Example::

    from pfconvert.finetune import FinetuneConfig, finetune
    result = finetune("out/mnv2-maxpool", FinetuneConfig(data="fashion-mnist", epochs=2, img_size=64))
    print(result.best)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..._files import exclusive
from ...data.datasets import open_split, resolve_source
from ...data.loaders import eval_loader
from ...data.transforms import build_transforms, model_data_config
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


def _data_config(model: Any, recipe_input: tuple[int, int, int], img_size: int | None) -> dict[str, Any]:
    """timm data config of the original model, at the recipe's input size unless ``img_size`` is given."""
    return model_data_config(model, img_size, input_size=None if img_size is not None else tuple(recipe_input))


def finetune(artifact_dir: str | Path, config: FinetuneConfig | None = None, *, resume: bool = False,
             overwrite: bool = False, reporter: Reporter | None = None) -> FinetuneResult:
    """Fine-tune the converted model of an artifact by distillation from its original model.

    Args:
        artifact_dir: directory written by ``pfconvert convert``; results are written into it.
        config: run settings; with ``resume`` and no config, the saved one is used.
        resume: continue the interrupted run from ``checkpoints/last.pt``, exactly.
        overwrite: discard an earlier run's checkpoints and fine-tuned weights.
        reporter: where progress goes; None writes plain lines on stderr (:class:`TextReporter`).

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
        return _finetune(path, config, resume, overwrite, reporter)


def _finetune(path: Path, config: FinetuneConfig, resume: bool, overwrite: bool,
              reporter: Reporter | None) -> FinetuneResult:
    student, recipe, _ = load_student(path, weights="converted")
    teacher = (load_teacher(recipe, path) if config.kd_weight > 0 or config.eval_teacher
               or config.reconstruct_images > 0 else None)
    data_cfg = _data_config(teacher if teacher is not None else student, recipe.input_size, config.img_size)
    warnings = []
    if teacher is not None and recipe.checkpoint is None and config.kd_weight > 0:
        warnings.append("the original model was converted without a checkpoint (random weights); "
                        "the teacher cannot help. Convert from trained weights, or pass --kd-weight 0")
    return run_finetune(student, teacher, config, path, data_cfg=data_cfg, resume=resume, overwrite=overwrite,
                        reporter=reporter if reporter is not None else TextReporter(), export=save_finetuned,
                        warnings=warnings, identity=recipe.fingerprint())


@dataclass
class EvalReport:
    """``pfconvert eval`` result: metrics per evaluated model (``student``, optionally ``original``); ``weights`` is
    the weights file the student was loaded from."""

    artifact: str
    weights: str
    data: str
    split: str
    input_size: tuple[int, int, int]
    metrics: dict[str, EvalMetrics]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"artifact": self.artifact, "weights": self.weights, "data": self.data, "split": self.split,
                "input_size": list(self.input_size), "metrics": {k: v.as_dict() for k, v in self.metrics.items()}}


def evaluate_artifact(artifact_dir: str | Path, data: str, *, split: str = "val", weights: str = "auto",
                      batch_size: int = 128, img_size: int | None = None, limit: int | None = None,
                      workers: int = 2, device: str = "auto", original: bool = False, seed: int = 0) -> EvalReport:
    """Top-1/top-5 of an artifact's model (fine-tuned weights when present) on a split of ``data``.

    Args:
        artifact_dir: the artifact.
        data: ImageFolder dir, IDX dir or ``"fashion-mnist"``.
        split: ``"val"`` or ``"train"``.
        weights: ``auto``, ``converted`` or ``finetuned`` (see :func:`pfconvert.artifact.load_artifact`).
        batch_size: images per batch.
        img_size: input size (default: the recipe's).
        limit: evaluate a fixed random subset of this many images.
        workers: loader worker processes.
        device: ``auto``, ``cpu``, ``cuda``...
        original: also evaluate the original (unconverted) model.
        seed: seed of the ``limit`` subset.
    """
    if split not in ("train", "val"):
        raise ArtifactError(f"split must be train or val, not {split!r}")
    path = Path(artifact_dir)
    student, recipe, weights_file = load_student(path, weights=weights)
    models = {"student": student} | ({"original": load_teacher(recipe, path)} if original else {})
    data_cfg = _data_config(models.get("original", student), recipe.input_size, img_size)
    ctx: DistContext = setup(device)
    try:
        precision = resolve_precision(ctx.device)
        dataset = open_split(resolve_source(data), split, limit, seed)
        num_classes = infer_num_classes(student, tuple(data_cfg["input_size"]))
        if len(dataset.classes) != num_classes:
            raise DataError(f"the model has {num_classes} classes but {data} has {len(dataset.classes)}")
        dataset.mode = "RGB" if data_cfg["input_size"][0] == 3 else "L"
        dataset.transform = build_transforms(data_cfg, "none")[1]
        loader = eval_loader(dataset, batch_size, workers, ctx.rank, ctx.world_size, ctx.device.type == "cuda")
        memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
        metrics = {name: evaluate(model.to(ctx.device, memory_format=memory_format), loader, precision, ctx)
                   for name, model in models.items()}
    finally:
        teardown(ctx)
    return EvalReport(str(path), weights_file.name, str(data), split, tuple(data_cfg["input_size"]), metrics)
