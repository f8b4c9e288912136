"""Checkpoint files: atomic writes, ``weights_only`` loading, and the RNG states that make a resume exact.

A checkpoint is a plain dict of tensors and primitives (no pickled classes), so ``torch.load(path,
weights_only=True)`` reads it. Files are written through :func:`pfconvert._files.atomic_write` (a unique temporary
file, flushed to disk, then renamed over the target): a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._files import atomic_write
from ...conversion.artifact import CHECKPOINT_FILES
from ...errors import CheckpointError
from .config import FinetuneConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_DIR",
    "LAST_FILE",
    "BEST_FILE",
    "START_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "load_run_checkpoint",
    "copy_checkpoint",
    "capture_rng",
    "restore_rng",
]

CHECKPOINT_FORMAT = "pfconvert.finetune.v1"
CHECKPOINT_DIR = "checkpoints"
LAST_FILE, BEST_FILE, START_FILE = CHECKPOINT_FILES  # named by the artifact, whose --overwrite removes exactly these


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` (tensors and primitives only) atomically with the format tag added."""
    atomic_write(path, lambda temp: torch.save({"format": CHECKPOINT_FORMAT, **state}, temp))


def copy_checkpoint(source: Path, target: Path) -> None:
    """Atomically copy a checkpoint file (used to keep ``best.pt``)."""
    atomic_write(target, lambda temp: shutil.copyfile(source, temp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a pfconvert fine-tuning checkpoint.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return state


_PARTS = {"config": str, "run": dict, "engine": dict, "rng": list, "world_size": int}


def load_run_checkpoint(path: Path) -> tuple[dict[str, Any], FinetuneConfig]:
    """Read a fine-tuning checkpoint (:func:`load_checkpoint`) and check it holds a run: its parts, their types and
    a valid saved config; returns the state and that config.

    Raises:
        CheckpointError: the file is unreadable, or a part is missing, of the wrong type or invalid.
    """
    from pydantic import ValidationError

    state = load_checkpoint(path)
    for key, kind in _PARTS.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"checkpoint {path} is damaged: '{key}' is missing or not a {kind.__name__}; "
                                  "start again with --overwrite")
    try:
        config = FinetuneConfig.model_validate_json(state["config"])
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        raise CheckpointError(f"checkpoint {path} is damaged: its saved setting {field} is invalid ({err['msg']}); "
                              "start again with --overwrite") from None
    return state, config


def capture_rng() -> dict[str, Any]:
    """The states of the python, numpy, torch CPU and CUDA generators, as tensors and primitives."""
    version, mt_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back in the state :func:`capture_rng` recorded."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
