"""Geometry-exact shrinking as a rule: find the convs whose traced input map keeps part of their kernel out of play
(:func:`pfconvert.ops.shrink.plan_taps`) and write the ``shrink`` rule that replaces each by the smaller conv it
equals, on its own or after another rule set (whose rules claim their layers first)."""

from __future__ import annotations

import yaml
from torch import nn

from ..graph.dataflow import Dataflow, trace_dataflow
from ..graph.geometry import conv_geometry
from ..ops.shrink import plan_taps, supports_shrink
from ..rules.loading import LoadedRules, parse_rules

__all__ = ["SHRINK_RULE", "shrinkable_layers", "shrink_rule_doc", "with_shrink"]

SHRINK_RULE = "shrink"
"""The name of the rule :func:`with_shrink` adds."""


def shrinkable_layers(model: nn.Module, input_size: tuple[int, int, int] | None = None,
                      flow: Dataflow | None = None) -> list[str]:
    """Paths of the convs of ``model`` that some kernel taps never reach at ``input_size`` (or in ``flow``, a traced
    forward of ``model``), in call order."""
    if flow is None:
        if input_size is None:
            raise ValueError("pass input_size or a traced flow")
        flow = trace_dataflow(model, input_size)
    paths = []
    for path, calls in flow.all_by_path.items():
        module = calls[0].module
        if conv_geometry(module) is None or supports_shrink(module) is not None:
            continue
        try:
            plan = plan_taps(module, [c.input_shape for c in calls if c.input_shape is not None])
        except ValueError:
            continue
        if plan.shrinks:
            paths.append(path)
    return paths


def shrink_rule_doc(paths: list[str], name: str = SHRINK_RULE) -> dict:
    """The rule (as a YAML-ready dict) that shrinks the layers at ``paths``."""
    return {"name": name, "description": "geometry-exact: the convs whose input map keeps kernel taps out of play, "
                                         "replaced by the smaller conv they equal (written by pfconvert)",
            "match": {"op": "conv2d", "path": sorted(paths)}, "replace": {"op": "shrink"}}


def with_shrink(rules: LoadedRules | None, paths: list[str]) -> LoadedRules | None:
    """``rules`` with a last rule that shrinks the layers at ``paths`` its own rules leave (first rule wins);
    the shrink rule alone when ``rules`` is None; ``rules`` unchanged when there is nothing to shrink."""
    if not paths:
        return rules
    docs = [r.model_dump(mode="json", exclude_none=True) for r in rules.ruleset.rules] if rules is not None else []
    taken = {d["name"] for d in docs}
    name = next(n for n in (SHRINK_RULE, *(f"{SHRINK_RULE}-{i}" for i in range(2, 100))) if n not in taken)
    doc = {"name": f"{rules.name}+shrink" if rules is not None else SHRINK_RULE,
           "description": (f"{rules.ruleset.description or rules.name}; then the geometry-exact shrink of the convs "
                           "left whose input map keeps kernel taps out of play") if rules is not None else
                          "The convs whose input map keeps kernel taps out of play, replaced by the smaller conv they "
                          "equal (exact at the traced input size; written by pfconvert)",
           "rules": [*docs, shrink_rule_doc(paths, name)]}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<shrink>")
