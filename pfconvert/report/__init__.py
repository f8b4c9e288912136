"""Efficiency report: counts (convention stated), peak memory and measured latency of original vs converted model.

Library use::

    from pfconvert.report import run_report, render_report
    report = run_report(original, converted, batch_sizes=(1, 32))
    rich.print(render_report(report)); report.to_json(); report.to_markdown()
"""

from __future__ import annotations

from .plot import plot_report as plot_report
from .render import render_report as render_report
from .report import LatencyRow as LatencyRow
from .report import ModelStats as ModelStats
from .report import Report as Report
from .report import verdict as verdict
from .run import run_report as run_report

__all__ = ["run_report", "render_report", "plot_report", "Report", "ModelStats", "LatencyRow", "verdict"]
