"""Efficiency report: counts (convention stated), peak memory and measured latency of original vs converted model.

Library use::

    from pfconvert.report import run_report
    report = run_report(original, converted, batch_sizes=(1, 32))
    print(report.to_markdown()); report.to_json(); report.summary()

(``pfconvert report`` draws the same report with rich: ``pfconvert.cli``.)
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "run_report": ".run",
    "list_backends": ".backends",
    "resolve_pair": ".pairs",
    "ModelPair": ".pairs",
    "plot_report": ".plot",
    "Report": ".report",
    "ModelStats": ".report",
    "LatencyRow": ".report",
    "verdict": ".report",
    "describe_machine": ".machine",
})
