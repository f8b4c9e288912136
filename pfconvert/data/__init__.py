"""Data: the data config (how images become a model's input), image datasets and their train/val/test splits
(timm's dataset factory, IDX files such as Fashion-MNIST) and the transforms the data config asks for."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DataConfig": ".config",
    "resolve_data_config": ".config",
    "SPLITS": ".datasets",
    "DataSource": ".datasets",
    "ImageSamples": ".datasets",
    "open_split": ".datasets",
    "resolve_source": ".datasets",
    "read_idx": ".idx",
    "eval_loader": ".loaders",
    "build_transforms": ".transforms",
    "calibration_images": ".calibration",
})
