"""Inference kernels of the replacement ops: :class:`FastMaxPool2d` and the native C max-pool it runs on."""

from __future__ import annotations

from ..._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FastMaxPool2d": ".fast_pool",
})
