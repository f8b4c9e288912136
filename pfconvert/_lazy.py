"""Lazy package exports (PEP 562): a package's public names are imported from their modules on first use.

Every package ``__init__`` of pfconvert declares its exports this way, so importing a package (and the command line,
which imports several) costs nothing until a name is used: ``pfconvert --help`` never imports torch.

Example::

    from .._lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"convert": ".convert", "save": ".artifact"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]],
                                                                   list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``exports`` maps each name to its module, relative to the
    package (``".convert"``) or absolute."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, list(exports)
