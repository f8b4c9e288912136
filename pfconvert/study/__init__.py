"""Studies built on conversion, recovery and measurement: which layer groups are worth converting
(:mod:`.sensitivity`), and which conversion to make on a given backend (:mod:`.plan`, built on the sensitivity study)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "StageGroup": ".groups",
    "LayerGroup": ".groups",
    "GroupResult": ".sensitivity",
    "SensitivityResult": ".sensitivity",
    "run_sensitivity": ".sensitivity",
    "selected_rules": ".sensitivity",
    "sensitivity_on_data": ".sensitivity",
    "Candidate": ".plan",
    "PlanResult": ".plan",
    "PlanRefused": ".plan",
    "NoPayoff": ".plan",
    "plan_conversion": ".plan",
    "plan_on_data": ".plan",
    "plot_plan": ".plan",
    "data_deployer": ".deployed",
})
