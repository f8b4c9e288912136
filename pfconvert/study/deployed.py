"""Accuracy as deployed: top-1 of models in PyTorch (fp32) and on int8 runtimes, side by side, on the user's data.

int8 changes what a model computes, so its accuracy is measured, not assumed: each model is quantized on the same
calibration images (training images, prepared as the model is fed) and evaluated on the same images of the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data.config import DataConfig
from ..deploy.quantize import Calibration

__all__ = ["PYTORCH_FP32", "data_calibration", "accuracy_on_runtimes"]

PYTORCH_FP32 = "PyTorch fp32"
"""The label of the reference row (ONNX Runtime and OpenVINO fp32 compute the same within 1e-4)."""


def data_calibration(data: str, data_cfg: DataConfig, count: int, val_split: float = 0.1) -> Calibration:
    """``count`` training images of ``data`` prepared as ``data_cfg`` feeds them, as a :class:`Calibration`."""
    from ..data.calibration import calibration_images

    images, source = calibration_images(data, data_cfg, count, val_split=val_split)
    return Calibration.from_tensor(images, source)


def accuracy_on_runtimes(models: dict[str, nn.Module], runtimes: Sequence[str], data: str, data_cfg: DataConfig, *,
                         split: str = "test", limit: int | None = 1000, calibration: Calibration | None = None,
                         val_split: float = 0.1, batch_size: int = 64, threads: int | None = None,
                         on_step: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Top-1 (percent) of each model in PyTorch and on each runtime of ``runtimes`` (int8 ones calibrated on
    ``calibration``, which the caller reads from the training images: :func:`data_calibration`).

    Returns:
        ``{"PyTorch fp32": {name: top-1}, "<runtime label>": {name: top-1}, ...}``.
    """
    from ..data.datasets import open_split, resolve_source
    from ..data.loaders import eval_loader
    from ..data.transforms import build_transforms
    from ..deploy.runtime import deploy
    from ..recover.metrics import evaluate
    from ..recover.precision import resolve_precision

    step = on_step or (lambda _: None)
    dataset = open_split(resolve_source(data), split, limit, val_fraction=val_split)
    dataset.mode = data_cfg.image_mode
    cfg, _ = data_cfg.for_images(dataset.image_size())
    dataset.transform = build_transforms(cfg, "none")[1]
    loader = eval_loader(dataset, batch_size)
    precision = resolve_precision(torch.device("cpu"))
    out: dict[str, dict[str, Any]] = {PYTORCH_FP32: {}}
    for name, model in models.items():
        step(f"top-1 of the {name} model in PyTorch on {len(dataset)} {split} images")
        out[PYTORCH_FP32][name] = evaluate(model, loader, precision).top1
    for runtime in runtimes:
        for name, model in models.items():
            step(f"deploying the {name} model on {runtime}")
            deployed = deploy(model, runtime, cfg.input_size, calibration, threads)
            step(f"top-1 of the {name} model on {deployed.label}")
            out.setdefault(deployed.label, {})[name] = evaluate(deployed, loader, precision).top1
    return out
