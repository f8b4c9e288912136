"""Command-line interface: ``pfconvert`` (:func:`main`) and the rich progress display it uses (:class:`RichReporter`,
usable from scripts too)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "main": ".app",
    "RichReporter": ".progress",
})
