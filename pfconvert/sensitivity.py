"""Layer-group sensitivity: convert one group (stage or layer) at a time, measure the accuracy drop and latency
change of each, and write a rule file that converts only the groups worth converting.

This is the paper's layer-level study turned into a tool. Evaluation and timing are passed in as callables, so the
study runs on any data and backend.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml
from torch import nn

from .convert import apply_matches, plan
from .errors import RuleError
from .match import Match
from .rules import LoadedRules, parse_rules

__all__ = ["GroupResult", "SensitivityResult", "group_matches", "run_sensitivity", "selected_rules"]


@dataclass
class GroupResult:
    """One converted group: its layers, accuracy after conversion, drop vs. the original, latency ratio."""

    group: str
    layers: list[str]
    rules: list[str]  # the rule that matched each layer
    top1: float
    drop: float
    latency_ms: float
    latency_ratio: float  # converted / original: below 1.0 is faster
    params_removed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class SensitivityResult:
    """The original's accuracy and latency, and one result per group ranked by accuracy drop (smallest first)."""

    base_top1: float
    base_latency_ms: float
    groups: list[GroupResult] = field(default_factory=list)

    def ranked(self) -> list[GroupResult]:
        """Groups from the least to the most harmful (ties broken by latency gain)."""
        return sorted(self.groups, key=lambda g: (g.drop, g.latency_ratio))

    def worth_converting(self, max_drop: float) -> list[GroupResult]:
        """Groups whose accuracy drop is at most ``max_drop`` points."""
        return [g for g in self.ranked() if g.drop <= max_drop]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"base_top1": self.base_top1, "base_latency_ms": self.base_latency_ms,
                "groups": [g.to_dict() for g in self.ranked()]}


def group_matches(matches: list[Match], by: str = "stage") -> dict[str, list[Match]]:
    """Group matches by ``stage`` (as parsed from module paths; unstaged layers form 'other') or by ``layer``."""
    if by not in ("stage", "layer"):
        raise RuleError(f"--by must be stage or layer, not {by!r}")
    groups: dict[str, list[Match]] = {}
    for match in matches:
        key = match.site.path if by == "layer" else (
            f"stage {match.site.stage}" if match.site.stage is not None else "other")
        groups.setdefault(key, []).append(match)
    return groups


def run_sensitivity(
    model: nn.Module,
    rules: LoadedRules,
    input_size: tuple[int, int, int],
    evaluate: Callable[[nn.Module], float],
    latency_ms: Callable[[nn.Module, nn.Module], tuple[float, float]],
    by: str = "stage",
    prepare: Callable[[nn.Module], None] | None = None,
    on_group: Callable[[str, int, int], None] | None = None,
) -> SensitivityResult:
    """Convert each group alone (on a copy of ``model``) and measure it.

    Args:
        model: the original model (not modified).
        rules: the rules whose matches are studied.
        input_size: (C, H, W) of the traced forward.
        evaluate: top-1 accuracy (percent) of a model.
        latency_ms: ``(original, variant) -> (original ms, variant ms)``, both measured in the same run so that the
            ratio is not skewed by drift between runs.
        by: ``stage`` or ``layer``.
        prepare: called on each converted copy before evaluation (e.g. BatchNorm re-estimation).
        on_group: progress callback (group name, index, total).
    """
    matches, flow = plan(model, rules, input_size)
    if not matches:
        raise RuleError(f"rule '{rules.name}' matched no layer; nothing to study")
    groups = group_matches(matches, by)
    result = SensitivityResult(base_top1=evaluate(model), base_latency_ms=0.0)
    base_times = []
    for index, (name, members) in enumerate(groups.items()):
        if on_group is not None:
            on_group(name, index, len(groups))
        variant = copy.deepcopy(model)
        done = apply_matches(variant, members, flow)
        if prepare is not None:
            prepare(variant)
        top1 = evaluate(variant)
        base_ms, ms = latency_ms(model, variant)
        base_times.append(base_ms)
        result.groups.append(GroupResult(name, [m.site.path for m in members], [m.rule.name for m in members], top1,
                                         result.base_top1 - top1, ms, ms / base_ms,
                                         sum(r.params_removed for r in done)))
    result.base_latency_ms = sorted(base_times)[len(base_times) // 2]
    return result


def selected_rules(rules: LoadedRules, result: SensitivityResult, max_drop: float) -> LoadedRules:
    """A rule set that converts only the layers of groups within ``max_drop``, with the original replacements."""
    worth = result.worth_converting(max_drop)
    if not worth:
        raise RuleError(f"no group stays within --max-drop {max_drop} (smallest drop: "
                        f"{min(g.drop for g in result.groups):.2f} points); raise --max-drop")
    out_rules = []
    for rule in rules.ruleset.rules:
        data = rule.model_dump(mode="json", exclude_none=True)
        data["match"].pop("every_nth", None)
        data["match"].pop("offset", None)
        paths = [path for g in worth for path, name in zip(g.layers, g.rules) if name == rule.name]
        if paths:
            data["match"]["path"] = sorted(paths)
            out_rules.append(data)
    doc = {"name": f"{rules.name}-selected",
           "description": f"Layers of rule '{rules.name}' whose conversion alone costs at most {max_drop} top-1 "
                          "points (written by pfconvert sensitivity).",
           "rules": out_rules}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<sensitivity>")

