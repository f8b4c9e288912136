"""Rich rendering of a :class:`~pfconvert.report.report.Report`.

Speed-ups are green only when the converted model is faster beyond the noise margin, red when it is slower; a
change within the noise is shown plain as "same".
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._format import change, human
from ..report.report import FASTER, SLOWER, Report

__all__ = ["render_report", "counts_table", "latency_table"]


def counts_table(report: Report) -> Table:
    """Params, MACs, pool ops, peak memory (and accuracy when known): original vs converted."""
    o, c = report.original, report.converted
    table = Table(title=escape(f"{o.name} vs {c.name}"), title_justify="left")
    for col in ("", "original", "converted", "change"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("params", human(o.params), human(c.params), change(o.params, c.params))
    table.add_row("MACs", human(o.macs), human(c.macs), change(o.macs, c.macs))
    table.add_row("pool ops", human(o.pool_ops), human(c.pool_ops), change(o.pool_ops, c.pool_ops))
    for bs in sorted(set(o.peak_memory) & set(c.peak_memory)):
        a, b = o.peak_memory[bs], c.peak_memory[bs]
        table.add_row(f"peak memory, batch {bs}", human(a, "B"), human(b, "B"), change(a, b))
    if o.accuracy is not None and c.accuracy is not None:
        table.add_row("top-1", f"{o.accuracy:.2f}", f"{c.accuracy:.2f}", f"{c.accuracy - o.accuracy:+.2f}")
    for label, top1 in report.accuracy.items():
        a, b = top1["original"], top1["converted"]
        table.add_row(escape(f"top-1, {label}"), f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}")
    table.caption = escape(report.convention)
    table.caption_justify = "left"
    return table


def _speedup_text(speedup: float, verdict: str) -> Text:
    if verdict == FASTER:
        return Text(f"{speedup:.2f}x", style="bold green")
    if verdict == SLOWER:
        return Text(f"{speedup:.2f}x", style="bold red")
    return Text(f"{speedup:.2f}x")


def _verdict_text(verdict: str, latency_ratio: float) -> Text:
    if verdict == FASTER:
        return Text("faster", style="green")
    if verdict == SLOWER:
        return Text(f"SLOWER ({latency_ratio:.2f}x the time)", style="bold red")
    return Text(verdict, style="dim")


def latency_table(report: Report) -> Table:
    """One row per backend and batch size: median (p90) latency of both models, speed-up, verdict."""
    table = Table(title=f"Latency, input {'x'.join(map(str, report.input_size))}, {report.threads} CPU threads",
                  title_justify="left")
    for col, justify in (("backend", "left"), ("batch", "right"), ("original ms", "right"),
                         ("converted ms", "right"), ("speed-up", "right"), ("noise", "right"), ("verdict", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in report.latency:
        table.add_row(escape(r.backend_label), str(r.batch_size), f"{r.original_ms:.2f} ({r.original_p90_ms:.2f})",
                      f"{r.converted_ms:.2f} ({r.converted_p90_ms:.2f})", _speedup_text(r.speedup, r.verdict),
                      f"+-{r.margin:.0%}", _verdict_text(r.verdict, r.latency_ratio))
    table.caption = ("median (p90) of interleaved runs after warm-up; speed-up = original / converted; within the "
                     "noise margin counts as 'same'")
    table.caption_justify = "left"
    return table


def render_report(report: Report) -> RenderableType:
    """The whole report as one rich renderable: counts, latency, and plain-language notes."""
    parts: list[RenderableType] = [counts_table(report), Text(report.memory_note, style="dim")]
    if report.latency:
        parts.append(latency_table(report))
    for line in report.deployed_lines():
        parts.append(Text(line, style="bold"))
    slow = report.slowdowns()
    if slow:
        where = ", ".join(f"{r.backend_label} batch {r.batch_size}" for r in slow)
        parts.append(Text(f"Not faster: the converted model is slower on {where}.", style="bold red"))
    for note in report.notes:
        parts.append(Text(note, style="dim"))
    return Group(*parts)
