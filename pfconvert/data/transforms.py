"""Image transforms from a :class:`~pfconvert.data.config.DataConfig` (timm's ``create_transform``)."""

from __future__ import annotations

from collections.abc import Callable

from .config import DataConfig

__all__ = ["build_transforms", "AUGMENTATIONS"]

AUGMENTATIONS = ("none", "light", "timm")


def build_transforms(data_cfg: DataConfig, augment: str = "light") -> tuple[Callable, Callable]:
    """Return ``(train_transform, eval_transform)`` built by timm's ``create_transform`` from ``data_cfg``.

    Args:
        data_cfg: how images become the model's input.
        augment: ``"none"`` (train with the eval transform), ``"light"`` (random resized crop of 60-100% of the area
            and horizontal flip; right for short fine-tunes) or ``"timm"`` (timm's ImageNet training defaults).
    """
    from timm.data import create_transform

    cfg = data_cfg.timm_kwargs()
    eval_tf = create_transform(**cfg)
    if augment == "none":
        return eval_tf, eval_tf
    common = {key: cfg[key] for key in ("input_size", "interpolation", "mean", "std")}
    if augment == "light":
        return create_transform(**common, is_training=True, scale=(0.6, 1.0), color_jitter=None), eval_tf
    return create_transform(**common, is_training=True), eval_tf
