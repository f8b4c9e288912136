"""Data: image datasets on disk (ImageFolder trees, IDX files such as Fashion-MNIST) and the transforms a model's
data config asks for."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DataSource": ".datasets",
    "ImageSamples": ".datasets",
    "open_split": ".datasets",
    "resolve_source": ".datasets",
    "read_idx": ".idx",
    "eval_loader": ".loaders",
    "build_transforms": ".transforms",
    "model_data_config": ".transforms",
})
