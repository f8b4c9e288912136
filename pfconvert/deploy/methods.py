"""The deploy-method registry: names, one-line summaries and default layouts of the ways to deploy a model for CPU
inference, with the builders imported on first use (listing the methods, as the command line's help does, imports no
torch). The builders are in :mod:`pfconvert.deploy.cpu`; its docstring says what each method does and when to use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PfconvertError

__all__ = ["DeployMethod", "AUTO_ORDER", "register_method", "get_method", "list_methods", "method_help",
           "resolve_method"]


@dataclass(frozen=True)
class DeployMethod:
    """One way of deploying a model for CPU inference.

    ``build(model, example)`` gets a private eval-mode copy (already in channels_last when ``channels_last``) and
    returns the callable to run; ``is_available()`` tells whether this machine has what the method needs.
    """

    name: str
    summary: str
    build: Callable[[Any, Any], Callable[[Any], Any]]
    is_available: Callable[[], bool] = lambda: True
    channels_last: bool = False


_METHODS: dict[str, DeployMethod] = {}
AUTO_ORDER = ("llga", "jit", "compile", "eager")
"""The order in which ``auto`` picks the first available method."""


def register_method(method: DeployMethod) -> DeployMethod:
    """Add a deploy method (a later registration under the same name replaces the earlier one)."""
    _METHODS[method.name] = method
    return method


def list_methods(available_only: bool = False) -> list[str]:
    """Registered method names, in registration order (``auto`` is not one of them)."""
    return [m.name for m in _METHODS.values() if not available_only or m.is_available()]


def get_method(name: str) -> DeployMethod:
    """The registered method ``name``.

    Raises:
        PfconvertError: unknown name.
    """
    if name not in _METHODS:
        raise PfconvertError(f"unknown deploy method {name!r}; choose from auto, {', '.join(_METHODS)}")
    return _METHODS[name]


def method_help() -> str:
    """One line per method, for ``--deploy`` help texts."""
    return "; ".join(f"{m.name}: {m.summary}" for m in _METHODS.values())


def resolve_method(method: str = "auto") -> str:
    """The concrete method ``auto`` stands for on this machine (the first available of :data:`AUTO_ORDER`)."""
    if method != "auto":
        return get_method(method).name
    for name in AUTO_ORDER:
        if name in _METHODS and _METHODS[name].is_available():
            return name
    return "eager"


def _cpu(name: str) -> Callable[..., Any]:
    """``pfconvert.deploy.cpu.<name>``, imported when first called."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module("pfconvert.deploy.cpu"), name)(*args)

    return call


register_method(DeployMethod("llga", "frozen TorchScript run with oneDNN Graph fusion (fastest measured here)",
                             _cpu("build_llga"), _cpu("has_llga")))
register_method(DeployMethod("jit", "frozen TorchScript + optimize_for_inference (oneDNN blocked layout)",
                             _cpu("build_jit"), _cpu("has_torchscript"), channels_last=True))
register_method(DeployMethod("compile", "torch.compile with Inductor freezing (needs a C++ compiler; slow pools)",
                             _cpu("build_compile"), _cpu("has_cxx"), channels_last=True))
register_method(DeployMethod("eager", "BatchNorm folded, fast pool kernels, no graph (always works)", _cpu("build_eager")))
