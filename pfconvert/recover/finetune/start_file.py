"""The start of a run kept on disk (``checkpoints/start.pt``), so that a run from the same start does not compute it
again.

Reconstruction, block-wise distillation and BatchNorm re-estimation make the student the run starts from; on a
depthwise network they can take several times as long as the fine-tune itself. A manual sweep of ``--lr`` (or of the
budget) with ``--overwrite`` would recompute the same start for every run. The runner writes the student's weights
after the start, the start's record and the random generators' states to ``start.pt``, under a key of everything the
start depends on: the settings that act before the first step, the student's and the teacher's weights, the data (its
fingerprints and preprocessing), the artifact's identity, the device and the number of processes. A fresh run whose
key matches loads them instead of computing the start: its weights, record and every later step are those a run that
computed the start would have (on the CPU, bit for bit). Delete the file to compute the start again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.checks import Fingerprint
from ...errors import CheckpointError
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FinetuneConfig
from .start import FinetuneStart

__all__ = ["AFTER_START_FIELDS", "start_settings", "start_key", "weights_digest", "save_start", "load_start"]

AFTER_START_FIELDS = frozenset(
    {"epochs", "train_images", "opt", "lr", "lr_probe_images", "weight_decay", "momentum", "sched", "warmup_share",
     "warmup_epochs", "warmup_lr", "min_lr", "grad_clip", "temperature", "kd_weight", "task_weight", "feature_weight",
     "smoothing", "augment", "freeze_bn", "compile", "compile_backend", "ema", "ema_decay", "max_steps", "log_every",
     "eval_every", "val_every"}
)
"""Settings that act only after the start (the schedule, the losses, training augmentation, logging): runs that differ
only in these share a start. Every other setting is part of the start's key."""


def start_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings (a config's ``model_dump()``, or as ``finetune.json`` records them) that the start depends on:
    all but :data:`AFTER_START_FIELDS`."""
    return {k: v for k, v in settings.items() if k not in AFTER_START_FIELDS}


def weights_digest(model: nn.Module | None) -> str:
    """A hash of a model's parameters and buffers (names, dtypes, shapes and values); "" for no model."""
    if model is None:
        return ""
    digest = Fingerprint("weights")
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().view(-1)
        digest.add(name, flat.dtype, tuple(tensor.shape), flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def start_key(config: FinetuneConfig, student: nn.Module, teacher: nn.Module | None, *, data: dict[str, Any],
              identity: str | None, device: str, world_size: int) -> str:
    """The key of a start: equal keys mean the start computed from these inputs would be the same.

    Args:
        config: the run's settings (those in :data:`AFTER_START_FIELDS` are left out).
        student, teacher: the models as the run received them (before the start).
        data: what identifies the images and how they are read (fingerprints, the data config).
        identity: the artifact's recipe fingerprint, if any.
        device: the device the start runs on (``cpu``, ``cuda:0``) and its precision.
        world_size: the number of processes.
    """
    parts = {"settings": start_settings(config.model_dump()), "student": weights_digest(student),
             "teacher": weights_digest(teacher), "data": data, "identity": identity, "device": device,
             "world_size": world_size}
    return Fingerprint("start").add(json.dumps(parts, sort_keys=True, default=str)).hexdigest()


def save_start(path: Path, key: str, student: nn.Module, start: FinetuneStart, rng: list[dict[str, Any]]) -> None:
    """Write the start: the student's weights after it, its record, and each process's generator states."""
    weights = {name: tensor.detach().to("cpu").contiguous() for name, tensor in student.state_dict().items()}
    save_checkpoint({"kind": "start", "key": key, "student": weights, "start": json.dumps(start.to_dict()),
                     "rng": rng}, path)


def load_start(path: Path, key: str) -> tuple[dict[str, torch.Tensor], FinetuneStart, list[dict[str, Any]]] | None:
    """The start kept at ``path`` if it was written under ``key``: ``(student weights, record, generator states)``;
    None when there is no such file, it is unreadable, or its key differs (the start is then computed)."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError:
        return None
    if state.get("kind") != "start" or state.get("key") != key:
        return None
    return state["student"], FinetuneStart.from_dict(json.loads(state["start"])), state["rng"]
