"""Which two models a report compares: an artifact against its original, a timm model against its conversion by a
rule, or any two models named by timm name or artifact directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..conversion.artifact import Artifact, artifact_data_config, load_artifact
from ..conversion.original import load_original
from ..conversion.rewrite import convert
from ..errors import PfconvertError

__all__ = ["ModelPair", "resolve_pair"]


@dataclass
class ModelPair:
    """The original and the converted model, their display names, the input size an artifact is fed at (as
    fine-tuned, else as converted) and a line saying so, and ``compared``: a line saying how a model named beside an
    artifact was built (None when nothing needs saying)."""

    original: nn.Module
    converted: nn.Module
    names: tuple[str, str]
    input_size: tuple[int, int, int] | None = None
    note: str | None = None
    data_config: Any = None
    """The artifact's data config (:class:`pfconvert.data.DataConfig`) when the pair is one artifact, else None."""
    compared: str | None = None


def _is_artifact(ref: str) -> bool:
    return Path(ref).is_dir()


def _input(art: Artifact) -> tuple[tuple[int, int, int], str]:
    cfg, origin = artifact_data_config(art.path, art.recipe, art.model)
    return cfg.input_size, f"input: {cfg.describe()} ({origin})"


def _load(ref: str, kwargs: dict[str, Any]) -> tuple[nn.Module, str, tuple[int, int, int] | None, str | None]:
    """A model from a timm name or an artifact directory: (model, display name, input size and note if known)."""
    if _is_artifact(ref):
        art = load_artifact(ref)
        return (art.model, f"{art.recipe.model}+{art.recipe.rule_name}", *_input(art))
    return load_original(ref, **kwargs).model, ref, None, None


def resolve_pair(original: str, converted: str | None = None, rule: str | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> ModelPair:
    """The two models to compare.

    - ``ARTIFACT``: the artifact's converted model against its original, rebuilt from the recipe.
    - ``MODEL`` with ``rule``: the timm model against its conversion by the rule.
    - ``ORIGINAL CONVERTED``: each a timm name or an artifact directory.

    Raises:
        PfconvertError: a model name without ``converted`` or ``rule``, or ``rule`` with two models.
    """
    kwargs = model_kwargs or {}
    if converted is None:
        if _is_artifact(original):
            art = load_artifact(original)
            name = art.recipe.model or "original"
            built = load_original(art.path)
            cfg = built.data_config
            return ModelPair(built.model, art.model, (name, f"{name}+{art.recipe.rule_name}"), cfg.input_size,
                             f"input: {cfg.describe()} ({built.origin})", data_config=cfg)
        if rule is None:
            raise PfconvertError(f"'{original}' is a model name: give a CONVERTED model (name or artifact directory) "
                                 "or --rule RULE to convert it on the fly")
        model, _, size, _ = _load(original, kwargs)
        conv, _record = convert(model, rule, input_size=size)
        return ModelPair(model, conv, (original, f"{original}+{rule}"), size)
    if rule is not None:
        raise PfconvertError("--rule converts a single MODEL; drop it when CONVERTED is given")
    if _is_artifact(original) != _is_artifact(converted):  # a timm name beside an artifact: build it to match
        art = load_artifact(original if _is_artifact(original) else converted)
        name = converted if _is_artifact(original) else original
        model, compared = _beside(name, art, kwargs)
        loaded = (art.model, f"{art.recipe.model}+{art.recipe.rule_name}", *_input(art))
        named = (model, name, None, None)
        (a, name_a, size_a, note_a), (b, name_b, size_b, note_b) = (
            (loaded, named) if _is_artifact(original) else (named, loaded))
        return ModelPair(a, b, (name_a, name_b), size_a or size_b, note_a or note_b, compared=compared,
                         data_config=artifact_data_config(art.path, art.recipe, art.model)[0])
    a, name_a, size_a, note_a = _load(original, kwargs)
    b, name_b, size_b, note_b = _load(converted, kwargs)
    return ModelPair(a, b, (name_a, name_b), size_a or size_b, note_a or note_b)


_SHAPE_KWARGS = ("num_classes", "in_chans", "img_size")
"""The artifact's model kwargs a model named beside it takes (unless given): the same classifier and input."""


def _beside(name: str, art: Artifact, kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    """Model ``name`` built to be compared with artifact ``art``, and a line saying what it is.

    Named as the artifact's own model, with no kwargs of the user's: the artifact's original (its recorded kwargs and
    weights, as ``pfconvert report ARTIFACT``). Else a random-init model taking the artifact's class count and input
    channels (unless given), said so.
    """
    recipe, where = art.recipe, art.path
    if name == recipe.model and not kwargs:
        weights = f"checkpoint {recipe.checkpoint}" if recipe.checkpoint else "random init"
        return load_original(where).model, (f"compared: {name} as {where}'s original (rebuilt from its recipe: "
                                               f"{_kwargs_text(recipe.model_kwargs)}, weights: {weights})")
    taken = {k: v for k, v in recipe.model_kwargs.items() if k in _SHAPE_KWARGS and k not in kwargs}
    full = {**taken, **kwargs}
    return load_original(name, **full).model, (f"compared: {name} with random weights ({_kwargs_text(full)}"
                                        + (f"; {', '.join(taken)} as in {where}" if taken else "") + ")")


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "timm's defaults"
