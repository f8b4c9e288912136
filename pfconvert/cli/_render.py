"""Rich tables for conversions and rule listings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from .._format import change, human

if TYPE_CHECKING:
    from ..conversion.models import ModelSource
    from ..conversion.rewrite import ConversionRecord, Replacement
    from ..data.config import DataConfig
    from ..report.counting import MacCount
    from ..rules.loading import RuleInfo

__all__ = ["conversion_table", "preview_table", "rules_table", "header", "source_line"]


def source_line(source: ModelSource) -> str:
    """``model: mobilenetv2 -> mobilenetv2_100, weights: random init``."""
    name = source.requested if source.requested == source.name else f"{source.requested} -> {source.name}"
    weights = {"random": "random init", "module": "as given",
               "pretrained": f"timm pretrained ({source.detail or 'Hub'})",
               "pretrained-file": f"timm pretrained, from {source.detail}",
               "checkpoint": f"checkpoint {source.detail}"}.get(source.weights, source.weights)
    if getattr(source, "new_head", False):
        weights += ", new classifier (randomly initialised)"
    return f"model: {name}, weights: {weights}"


def header(record: ConversionRecord | None = None, *, source: ModelSource | None = None,
           data_cfg: DataConfig | None = None, origin: str | None = None) -> None:
    """Print on stderr which model and weights a command works on and how images are fed to it."""
    from ._console import say

    source = source or (record.source if record is not None else None)
    data_cfg = data_cfg or (record.data_config if record is not None else None)
    if source is not None:
        say(source_line(source))
    if data_cfg is not None:
        say(f"input: {data_cfg.describe()}" + (f" ({origin})" if origin else ""))


def conversion_table(record: ConversionRecord, before: MacCount, after: MacCount) -> Table:
    """Before/after table: params, MACs, pool ops, layers replaced per rule; the title says the input size."""
    name = record.model_name or "model"
    size = "x".join(str(v) for v in record.input_size)
    table = Table(title=escape(f"{name} + rule '{record.rules.name}', input {size}"), title_justify="left")
    for col in ("", "original", "converted", "change"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("params", human(record.params_before), human(record.params_after),
                  change(record.params_before, record.params_after))
    table.add_row("MACs", human(before.macs), human(after.macs), change(before.macs, after.macs))
    table.add_row("pool ops", human(before.pool_ops), human(after.pool_ops), "")
    for rule, n in record.counts_by_rule().items():
        table.add_row(escape(f"replaced by '{rule}'"), "", str(n), "")
    if record.pruning:
        from ..conversion.pruning import prune_label

        label = prune_label(record.pruning.get("importance", "l1"), bool(record.pruning.get("global_pruning")))
        table.add_row(f"pruned channels ({record.pruning['ratio']:g}{label}, multiples of "
                      f"{record.pruning['round_to']})", "",
                      f"{len(record.pruning['shapes'])} layers", "")
    table.caption = escape(before.convention)
    return table


def preview_table(replacements: list[Replacement]) -> Table:
    """One row per layer a rule would replace: path, what it is, the rule, what it becomes, what is absorbed, and
    (when any layer has one) what the replacement amounts to on the layer's input map (a pool that is an identity
    there, the taps a shrunk conv kept)."""
    table = Table(title_justify="left")
    notes = any(rep.note for rep in replacements)
    for col in ("#", "layer", "is", "rule", "becomes", "absorbs", *(("on its input map",) if notes else ())):
        table.add_column(col)
    for i, rep in enumerate(replacements):
        table.add_row(*(escape(text) for text in (str(i), rep.path, rep.old, rep.rule, rep.new,
                                                  ", ".join(p.rpartition(".")[2] for p in rep.absorbed) or "-",
                                                  *((rep.note,) if notes else ()))))
    return table


def rules_table(infos: list[RuleInfo]) -> Table:
    """Built-in rules with their descriptions."""
    table = Table(show_lines=True)
    table.add_column("rule", style="bold")
    table.add_column("rules", justify="right")
    table.add_column("description")
    for info in infos:
        table.add_row(escape(info.name), str(info.num_rules), escape(info.description))
    return table
