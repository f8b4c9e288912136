"""Studies built on conversion, recovery and measurement: which layer groups are worth converting
(:mod:`.sensitivity`)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "GroupResult": ".sensitivity",
    "SensitivityResult": ".sensitivity",
    "run_sensitivity": ".sensitivity",
    "selected_rules": ".sensitivity",
})
