"""Calibration images for int8 post-training quantization: a seeded subset of the training images (never the test
split, nor the validation images carved from the training set), prepared exactly as the model is fed (the data
config's resize, crop and normalisation)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .config import DataConfig
from .datasets import open_split, resolve_source
from .transforms import build_transforms

__all__ = ["calibration_images", "labelled_images"]


def calibration_images(data: str | Path, data_cfg: DataConfig, count: int, *, split: str = "train",
                       val_split: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``count`` images of ``split`` of ``data`` (a seeded subset), as one (N, C, H, W) batch, and a line saying what
    they are.

    Args:
        data: An image folder, a .tar, ``hfds/NAME``, an IDX folder or ``fashion-mnist``.
        data_cfg: How the model is fed (:func:`pfconvert.data.resolve_data_config`, or an artifact's).
        count: How many images (fewer when the split has fewer).
        split: ``train`` (calibration) or ``val`` (checking an int8 export on images it was not calibrated on).
        val_split: The share of the training images carved out as ``val`` (as the fine-tune carves it).
        seed: Seed of the carve and of the subset.

    Raises:
        DataError: ``count`` below 1, or the data cannot be read.
    """
    if count < 1:
        raise DataError(f"--calib-images must be at least 1, got {count}")
    images, _, source = labelled_images(data, data_cfg, count, split=split, val_split=val_split, seed=seed)
    return images, source


def labelled_images(data: str | Path, data_cfg: DataConfig, count: int, *, split: str = "val",
                    val_split: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """As :func:`calibration_images`, with the labels: (N, C, H, W) images, (N,) class indices and a line saying what
    they are (``split`` defaults to ``val``: images to measure on, outside the calibration images)."""
    if count < 1:
        raise DataError(f"the image count must be at least 1, got {count}")
    dataset = open_split(resolve_source(data), split, count, seed=seed, val_fraction=val_split)
    dataset.mode = data_cfg.image_mode
    cfg, _ = data_cfg.for_images(dataset.image_size())
    dataset.transform = build_transforms(cfg, "none")[1]
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return images, labels, f"{len(dataset)} images of {dataset.description} (input {cfg.describe()})"
