"""Image transforms from a model's timm data config (input size, mean/std, interpolation, crop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import create_transform, resolve_model_data_config
from torch import nn

__all__ = ["model_data_config", "build_transforms"]


def model_data_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """Resolve timm's data config (input size, mean/std, interpolation, crop) of ``model``, at ``img_size`` if set."""
    data_cfg = dict(resolve_model_data_config(model))
    if img_size is not None:
        data_cfg["input_size"] = (data_cfg["input_size"][0], img_size, img_size)
    return data_cfg


def build_transforms(data_cfg: dict[str, Any], augment: str = "light") -> tuple[Callable, Callable]:
    """Return ``(train_transform, eval_transform)`` built by timm's ``create_transform`` from ``data_cfg``.

    Args:
        data_cfg: from :func:`model_data_config`.
        augment: ``"none"`` (train with the eval transform), ``"light"`` (random resized crop of 60-100% of the area
            and horizontal flip; right for short fine-tunes) or ``"timm"`` (timm's ImageNet training defaults).
    """
    common = {key: data_cfg[key] for key in ("input_size", "interpolation", "mean", "std")}
    eval_tf = create_transform(**common, crop_pct=data_cfg.get("crop_pct"), crop_mode=data_cfg.get("crop_mode"))
    if augment == "none":
        return eval_tf, eval_tf
    if augment == "light":
        return create_transform(**common, is_training=True, scale=(0.6, 1.0), color_jitter=None), eval_tf
    return create_transform(**common, is_training=True), eval_tf
