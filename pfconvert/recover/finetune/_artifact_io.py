"""The one place where fine-tuning touches :mod:`pfconvert.conversion.artifact` (so a renamed helper is fixed
here only)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...conversion.artifact import (FINETUNED_FILE, RECIPE_FILE, Recipe, finetuned_metadata, load_artifact,
                                   save_weights)
from ...conversion.original import load_original

__all__ = ["FINETUNED_FILE", "RECIPE_FILE", "Recipe", "load_student", "load_teacher", "save_finetuned"]


def load_student(path: Path, weights: str = "converted") -> tuple[nn.Module, Recipe, Path]:
    """The converted model of the artifact at ``path`` (weights as converted by default), its recipe, and the
    weights file that was loaded."""
    artifact = load_artifact(path, weights=weights)
    return artifact.model, artifact.recipe, artifact.weights_file


def load_teacher(path: Path) -> nn.Module:
    """The original, unconverted model with its original weights, rebuilt from the artifact's recipe
    (:func:`pfconvert.conversion.original.load_original`, as every command builds its original)."""
    return load_original(path).model


def save_finetuned(model: nn.Module, path: Path) -> Path:
    """Write the fine-tuned student weights atomically as ``path/finetuned.safetensors`` (their metadata names the
    artifact's conversion: :func:`pfconvert.load` refuses them in another artifact); returns the file."""
    target = Path(path) / FINETUNED_FILE
    in_artifact = (Path(path) / RECIPE_FILE).is_file()  # a run written outside an artifact (library use) has no tag
    save_weights(model, target, metadata=finetuned_metadata(path) if in_artifact else None)
    return target
