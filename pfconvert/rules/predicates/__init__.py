"""Match predicates: the registry (:mod:`._registry`) and one module per family of ``match:`` keys (``kind``,
``geometry``, ``branch``, ``names``, ``position``, ``selection``). ``docs/extending.md`` shows how to add one."""

from __future__ import annotations

from ..._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Predicate": "._registry",
    "register_predicate": "._registry",
    "register_selection": "._registry",
    "list_predicates": "._registry",
    "get_predicate": "._registry",
    "predicate_fields": "._registry",
    "load_builtin_predicates": "._registry",
})
