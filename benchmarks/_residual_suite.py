"""The ``residual`` suite of ``benchmarks/coverage.py``: every timm model with a dense or grouped k x k conv inside a
residual branch, converted with the family rules ``bottleneck-max``, ``bottleneck-hybrid``, ``basic-max`` and ``basic-max-last``
(the last only counts for a model no other rule converts: see ``probe_residual``).

For each model (built and traced on the meta device where it can be, else on the CPU):

1. the traced dataflow gives its *targets*: dense or grouped k x k convs (k > 1) inside a residual branch;
2. a target is *replaceable* when a parameter-free op can take its place (same input and output channels) without
   leaving its branch with no trainable layer; a model whose targets are all channel-changing, or all the sole
   trainable layer of their branch (RepVGG's training-time 3x3 branch), is listed apart with that reason: the empty-
   branch guard refusing it is the right answer, not a failure;
3. every rule that matches converts a copy (the engine checks each replacement's shape and the guard), the converted
   model runs, its output shapes must equal the original's, and -- the guard checked independently -- the converted
   model may not have more residual branches without a trainable layer than the original had;
4. a model with replaceable targets that no rule converts is a failure, listed with the roles its targets have.

MACs are those of the conv and linear layers, from the traced shapes (fvcore's convention: one multiply-add = 1;
pooling counts 0), so that meta-built models are counted too.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["RULES", "FALLBACK", "targets", "probe_residual", "family_table"]

RULES = ("bottleneck-max", "bottleneck-hybrid", "basic-max", "basic-max-last")
FALLBACK = ("basic-max-last",)
"""Rules tried only on a model that no rule before them converts (a mirror of ``basic-max`` for SK blocks)."""


def _layer_macs(call: Any) -> int:
    from pfconvert.graph.geometry import conv_geometry
    from torch import nn

    if call.output_shape is None:
        return 0
    numel = 1
    for n in call.output_shape:
        numel *= n
    g = conv_geometry(call.module)
    if g is not None:
        return numel * (g.in_channels // g.groups) * g.kernel[0] * g.kernel[1]
    if isinstance(call.module, nn.Linear):
        return numel * call.module.in_features
    return 0


def macs(flow: Any) -> int:
    """Conv and linear MACs of one traced forward (every call of a shared layer counted)."""
    return sum(_layer_macs(c) for c in flow.calls)


def _empty_branches(flow: Any) -> int:
    from pfconvert.graph.residual import is_trainable, residual_branches

    return sum(1 for b in residual_branches(flow) if b.calls and not any(is_trainable(c.module) for c in b.calls))


def targets(flow: Any) -> tuple[int, int, list[str]]:
    """(targets, replaceable targets, reasons why the others are not): see the module docstring."""
    from pfconvert.graph.geometry import conv_geometry
    from pfconvert.graph.residual import branch_info, is_trainable

    seen: set[str] = set()
    found = replaceable = 0
    reasons: set[str] = set()
    for call in flow.calls:
        g = conv_geometry(call.module)
        if g is None or g.depthwise or max(g.kernel) == 1 or call.path in seen:
            continue
        seen.add(call.path)
        info = branch_info(flow, call)
        if not info.residual:
            continue
        found += 1
        others = [c for c in info.branch.calls if c.path != call.path and is_trainable(c.module)]
        if g.in_channels != g.out_channels:
            reasons.add("changes the channel count")
        elif not others:
            reasons.add("is the only trainable layer of its branch")
        else:
            replaceable += 1
    return found, replaceable, sorted(reasons)


def _roles(flow: Any) -> str:
    from pfconvert.graph.geometry import conv_geometry
    from pfconvert.graph.residual import branch_info

    roles: set[str] = set()
    for call in flow.calls:
        g = conv_geometry(call.module)
        if g is not None and not g.depthwise and max(g.kernel) > 1:
            info = branch_info(flow, call)
            if info.residual:
                roles.add("+".join(sorted(info.roles)) or "none")
    return ", ".join(sorted(roles))


def probe_residual(model: Any, size: tuple[int, int, int], ref_shapes: list, forward: Any, res: Any) -> None:
    """Steps 1-4 of the module docstring on a built ``model`` (``forward(model, size)`` runs it); fills ``res``."""
    import pfconvert
    from pfconvert.graph import trace_dataflow

    flow = trace_dataflow(model, size)
    res.depthwise, replaceable, reasons = targets(flow)  # 'depthwise' holds the suite's target count
    if not res.depthwise:
        res.status = "no-target"
        return
    if not replaceable:
        res.status, res.reason = "not-replaceable", "every target " + " or ".join(reasons)
        return
    before_macs, before_empty = macs(flow), _empty_branches(flow)
    res.rules = {}
    for rule in RULES:
        if rule in FALLBACK and res.rules:
            continue
        res.phase = f"convert {rule}"
        converted, record = pfconvert.convert(copy.deepcopy(model), rule, input_size=size, inplace=True,
                                              allow_empty=True)
        if not record.replacements:
            continue
        res.phase = f"converted-forward {rule}"
        shapes = forward(converted, size)
        if shapes != ref_shapes:
            raise RuntimeError(f"{rule}: converted output shapes {shapes} != original {ref_shapes}")
        after = trace_dataflow(converted, size)
        empty = _empty_branches(after)
        if empty > before_empty:
            raise RuntimeError(f"{rule}: {empty - before_empty} residual branch(es) left with no trainable layer")
        res.rules[rule] = {"replaced": len(record.replacements), "params": [record.params_before, record.params_after],
                           "macs": [before_macs, macs(after)]}
    if not res.rules:
        raise RuntimeError(f"no rule matched its {replaceable} replaceable target(s) (roles: {_roles(flow)})")
    res.replaced = max(r["replaced"] for r in res.rules.values())


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def family_table(results: list[Any], family_of: dict[str, str]) -> str:
    """Markdown: per timm module (family) and rule, models with replaceable targets, converted, median changes."""
    rows: dict[tuple[str, str], list[dict]] = {}
    eligible: dict[str, int] = {}
    for r in results:
        if r.status not in ("ok", "engine-failure"):
            continue
        family = family_of.get(r.name, "?")
        eligible[family] = eligible.get(family, 0) + 1
        for rule, found in (r.rules or {}).items():
            rows.setdefault((family, rule), []).append(found)
    lines = ["| family (timm module) | models with replaceable targets | rule | converted | median layers replaced | "
             "median params change | median conv+linear MACs change |", "|---|---:|---|---:|---:|---:|---:|"]
    for (family, rule), found in sorted(rows.items()):
        params = _median([100.0 * (f["params"][1] / f["params"][0] - 1) for f in found])
        mac = _median([100.0 * (f["macs"][1] / f["macs"][0] - 1) for f in found])
        layers = _median([f["replaced"] for f in found])
        lines.append(f"| {family} | {eligible[family]} | `{rule}` | {len(found)} | {layers:g} | {params:+.1f}% | "
                     f"{mac:+.1f}% |")
    return "\n".join(lines)
