"""Image transforms from a model's timm data config (input size, mean/std, interpolation, crop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import create_transform, resolve_model_data_config
from torch import nn

__all__ = ["model_data_config", "build_transforms"]


def model_data_config(model: nn.Module, img_size: int | None = None,
                      input_size: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Resolve timm's data config (input size, mean/std, interpolation, crop) of ``model``, at ``input_size`` (C, H,
    W) or ``img_size`` (H = W) if set.

    The channel count is the model's (``in_chans``), and the mean and std get one value per channel: a model built
    with ``in_chans=1`` keeps its pretrained config's three ImageNet values, which a grey image cannot be normalised
    with; they become their average.
    """
    data_cfg = dict(resolve_model_data_config(model))
    channels = getattr(model, "in_chans", None)
    c, h, w = input_size or data_cfg["input_size"]
    data_cfg["input_size"] = (int(channels) if isinstance(channels, int) and input_size is None else c, h, w)
    if img_size is not None:
        data_cfg["input_size"] = (data_cfg["input_size"][0], img_size, img_size)
    return fit_channels(data_cfg)


def fit_channels(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """``data_cfg`` with one mean and one std value per input channel (averaged or repeated as needed)."""
    channels = int(data_cfg["input_size"][0])
    for key in ("mean", "std"):
        values = tuple(float(v) for v in data_cfg[key])
        if len(values) != channels:
            data_cfg[key] = (sum(values) / len(values),) * channels
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
