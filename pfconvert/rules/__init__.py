"""Rule schema and loading: built-in rule names or YAML files, validated into a :class:`~.schema.RuleSet`.

Importing this package is cheap (no torch); the schema (:mod:`.schema`) is built from the op and predicate registries
(:mod:`.predicates`) on the first validation.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "LoadedRules": ".loading",
    "RuleInfo": ".loading",
    "builtin_names": ".loading",
    "list_rules": ".loading",
    "load_rules": ".loading",
    "parse_rules": ".loading",
})
