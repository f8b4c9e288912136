"""The original model of every command, with its weights and the data config it is fed with: built from a timm name
(``convert``, ``inspect``, ``plan``, ``sensitivity``, ``report MODEL``), or rebuilt from an artifact (``report
ARTIFACT``, ``eval --original``, the fine-tuning teacher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data.config import DataConfig, resolve_data_config
from ..errors import ModelError
from .artifact import RECIPE_FILE, Recipe, artifact_data_config, build_original
from .models import ModelSource, build_model, input_size as model_input_size

__all__ = ["Original", "load_original"]


@dataclass
class Original:
    """An original model, where its weights came from, and how it is fed.

    Attributes:
        model: the model (train mode, as built).
        source: where the model and its weights came from (an artifact's recorded source; None for recipes older
            than that record).
        data_config: the data config it is fed with (input size, resize, crop, mean, std).
        origin: where that config comes from (timm's pretrained config, or the artifact's record).
        artifact: the artifact it was rebuilt from, or None for a model built by name.
    """

    model: nn.Module
    source: ModelSource | None
    data_config: DataConfig
    origin: str
    artifact: Path | None = None


def load_original(model: str | Path, checkpoint: str | Path | None = None, *, pretrained: bool = False,
                  pretrained_file: str | Path | None = None, new_head: bool = False,
                  input_size: tuple[int, int, int] | int | None = None, data: dict[str, Any] | None = None,
                  trained: bool = True, **kwargs: Any) -> Original:
    """The original model and its data config.

    Args:
        model: a timm model name (a ``str``: see :func:`pfconvert.create_model`), or an artifact directory (a
            ``Path``; a string is never taken for one): its original rebuilt from the recipe with the original
            weights (:func:`pfconvert.build_original`), fed as the artifact's model is (as fine-tuned when
            ``trained`` and it was, else as converted: :func:`artifact_data_config`).
        checkpoint, pretrained, pretrained_file, new_head, kwargs: the weights and ``timm.create_model`` kwargs of a
            model name (see :func:`pfconvert.create_model`); an artifact records its own.
        input_size: (C, H, W), or a side N (the model's channels at N x N); default: the model's (timm's config, or
            the artifact's record).
        data: overrides of a model name's data config (``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``,
            ``std``: :func:`pfconvert.data.resolve_data_config`).

    Raises:
        ModelError: weights, kwargs or data overrides given with an artifact (it records its own), or any error of
            :func:`pfconvert.create_model`.
        ArtifactError: the artifact cannot be read or its original weights do not fit.
    """
    if isinstance(model, Path):
        given = [name for name, value in (("checkpoint", checkpoint), ("pretrained", pretrained),
                                          ("pretrained_file", pretrained_file), ("new_head", new_head),
                                          ("data", data), *kwargs.items()) if value]
        if given:
            raise ModelError(f"{model} is an artifact: its original is rebuilt from its recipe with the recorded "
                             f"weights and kwargs; drop {', '.join(given)}")
        path = Path(model)
        recipe = Recipe.from_file(path / RECIPE_FILE)
        original = build_original(recipe, path)
        side = input_size if isinstance(input_size, int) else None
        cfg, origin = artifact_data_config(path, recipe, original, side, trained=trained)
        if isinstance(input_size, tuple):
            cfg, origin = cfg.with_size(input_size[1], input_size[2]), f"{origin}, at {input_size}"
        return Original(original, recipe.source, cfg, origin, path)
    built, source = build_model(model, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file,
                                new_head=new_head, **kwargs)
    size = (model_input_size(built)[0], input_size, input_size) if isinstance(input_size, int) else input_size
    cfg = resolve_data_config(built, input_size=size, **(data or {}))
    return Original(built, source, cfg, "the model's pretrained config" + (", with the options given" if data else ""))
