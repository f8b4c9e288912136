"""Replacement ops: the registry (:mod:`._registry`), one module per op (``pool``, ``identity``, ``shift``,
``sequence``, ``mixers``, ``lp_pool``), building a replacement for a matched layer (:mod:`._build`) and the inference
kernels (:mod:`.kernels`). ``docs/extending.md`` shows how to add an op."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "BuildContext": "._registry",
    "Count": "._registry",
    "OpDef": "._registry",
    "OpSpec": "._registry",
    "register_op": "._registry",
    "get_op": "._registry",
    "list_ops": "._registry",
    "op_names": "._registry",
    "load_builtin_ops": "._registry",
    "build_replacement": "._build",
    "describe_op": "._build",
    "ChannelRepeat": "._build",
    "DropExtraArgs": "._build",
    "FastMaxPool2d": ".kernels",
})
