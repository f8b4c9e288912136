"""Rich tables for conversions and rule listings (the CLI's only table builder for these)."""

from __future__ import annotations

from rich.table import Table

from ..convert import ConversionRecord
from ..match import Match
from ..report.counting import MacCount
from ..rules import RuleInfo

__all__ = ["conversion_table", "plan_table", "rules_table", "human"]


def human(n: float, unit: str = "") -> str:
    """3504872 -> '3.50M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def conversion_table(record: ConversionRecord, before: MacCount, after: MacCount) -> Table:
    """Before/after table: params, MACs, pool ops, layers replaced per rule."""
    name = record.model_name or "model"
    table = Table(title=f"{name} + rule '{record.rules.name}'", title_justify="left")
    for col in ("", "original", "converted", "change"):
        table.add_column(col, justify="right" if col else "left")

    def row(label: str, a: float, b: float) -> None:
        change = f"{(b - a) / a * 100:+.1f}%" if a else "-"
        table.add_row(label, human(a), human(b), change)

    row("params", record.params_before, record.params_after)
    row("MACs", before.macs, after.macs)
    table.add_row("pool ops", human(before.pool_ops), human(after.pool_ops), "")
    for rule, n in record.counts_by_rule().items():
        table.add_row(f"replaced by '{rule}'", "", str(n), "")
    table.caption = before.convention
    return table


def plan_table(matches: list[Match], ops: list[str]) -> Table:
    """One row per matched layer: path, what it is, the rule, what it becomes, what is absorbed."""
    table = Table(title_justify="left")
    for col in ("#", "layer", "is", "rule", "becomes", "absorbs"):
        table.add_column(col)
    for i, (match, op) in enumerate(zip(matches, ops)):
        table.add_row(str(i), match.site.path, match.site.describe(), match.rule.name, op,
                      ", ".join(p.rpartition(".")[2] for p in match.absorbed) or "-")
    return table


def rules_table(infos: list[RuleInfo]) -> Table:
    """Built-in rules with their descriptions."""
    table = Table(show_lines=True)
    table.add_column("rule", style="bold")
    table.add_column("rules", justify="right")
    table.add_column("description")
    for info in infos:
        table.add_row(info.name, str(info.num_rules), info.description)
    return table
