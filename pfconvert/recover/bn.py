"""BatchNorm re-estimation: recompute a converted model's running statistics on training images.

Replacing a depthwise conv by a max-pool changes the activations every later BatchNorm sees, so the running
mean/variance stored at conversion time no longer fit. Re-estimating them (a cumulative average over a few hundred
images, no gradient step) recovers much of the lost accuracy for free, and gives fine-tuning a better start.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import torch
from torch import nn

from .precision import Precision

__all__ = ["batchnorm_layers", "batchnorm_state", "load_batchnorm_state", "recalibrate_batchnorm"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` that tracks running statistics (timm's BatchNormAct2d included)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def batchnorm_state(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """A copy of every BatchNorm layer's running statistics (to undo a re-estimation)."""
    return [{name: buf.clone() for name, buf in layer.named_buffers(recurse=False)} for layer in batchnorm_layers(model)]


@torch.no_grad()
def load_batchnorm_state(model: nn.Module, state: list[dict[str, torch.Tensor]]) -> None:
    """Put back running statistics saved by :func:`batchnorm_state`."""
    for layer, saved in zip(batchnorm_layers(model), state, strict=True):
        for name, buf in layer.named_buffers(recurse=False):
            buf.copy_(saved[name])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, precision: Precision, max_batches: int,
                          keep: Collection[nn.Module] = (), advance: Callable[[int], None] | None = None) -> int:
    """Reset and re-estimate the running statistics of ``model``'s BatchNorm layers; weights are untouched.

    Args:
        model: the model (on ``precision.device``); its train/eval mode is restored afterwards.
        batches: an iterable of ``(images, targets)``.
        precision: device, autocast and memory format.
        max_batches: number of batches to average over.
        keep: BatchNorm layers whose statistics are right already (set by reconstruction): they are not reset and
            normalise with their running statistics during the pass.
        advance: called with each batch's size.

    Returns:
        The number of images used (0 when the model has no BatchNorm layer to re-estimate).
    """
    kept = {id(layer) for layer in keep}
    layers = [layer for layer in batchnorm_layers(model) if id(layer) not in kept]
    if not layers or max_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for layer in keep:
        layer.eval()
    seen = 0
    try:
        for index, (images, _) in enumerate(batches):
            if index >= max_batches:
                break
            with precision.autocast():
                model(precision.to_device(images))
            seen += len(images)
            if advance is not None:
                advance(len(images))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return seen
