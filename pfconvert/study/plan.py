"""Plan a conversion: search rules x stage subsets, measure each candidate, keep the Pareto front, pick the best.

For each candidate rule the search starts with the sensitivity study (:func:`pfconvert.study.run_sensitivity`: each
stage converted alone, accuracy measured after the same preparation), ranks the stages from the least to the most
harmful, and then measures the greedy prefixes of that ranking: the least harmful stage, the two least harmful, ...,
every stage (the rule as written). Each candidate's accuracy is measured after its preparation (reconstruction and
BatchNorm re-estimation on calibration images, when the caller's ``prepare`` does them); all candidates are then
timed side by side with the original, in the same interleaved rounds, on one backend at each batch size.

Proxy of the fine-tuned result (``proxy``; :func:`plan_on_data`'s ``proxy_images``, 2048 by default): accuracy right
after conversion does not predict the order after fine-tuning, so each candidate (a copy, once prepared) is first
distilled briefly from the original (:class:`pfconvert.study.proxy.DistillProxy`: the fine-tune's machinery on a
small stated share of its budget) and then scored; the score before it is kept (``top1_before_proxy``).
``benchmarks/frontier.py`` measures both scores' rank correlation with the fine-tuned test top-1.

Geometry-exact shrinking (``shrink=True``): the convs whose traced input map keeps kernel taps out of play (a 3x3
conv on a 1x1 map) are shrunk to the smaller conv they equal (:mod:`pfconvert.ops.shrink`) in every candidate, on the
layers its rule leaves, and shrinking alone is a candidate too (exact: no accuracy lost).

A candidate *pays off* when it is faster than the original at one batch size at least and slower at none (speed-ups
within each candidate's noise margin count as neither). A verdict rests on a few rounds, so the close calls are timed
again before anything is chosen (:func:`close_calls`): the candidates within ``max_drop`` whose verdicts disagree with
the order of their latency ratios (one called faster while another with a lower ratio is not), whose ratio is beyond
the 3% floor but within their own noise, or that are within the noise of the fastest. They are timed again with the
original, interleaved, and their rounds pooled with the earlier ones, until no close call is left, at most
``retime_passes`` passes, none started once ``retime_seconds`` have gone by. The plan then picks, among the
candidates that pay off within ``max_drop`` top-1 points, the fastest by worst-case latency ratio, read within the
noise (:func:`choose`: candidates within the combined noise margin of the fastest are equally fast, and of them the
most accurate is taken); it never picks one that is slower anywhere. Evaluation, preparation and timing are passed
in as callables, as for the sensitivity study.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from torch import nn

from .._deprecated import renamed_kwargs
from ..conversion.rewrite import apply_matches, match_rules
from ..conversion.shrinking import SHRINK_RULE, shrinkable_layers, with_shrink
from ..data.config import DataConfig
from ..errors import DataError, PfconvertError, RuleError
from ..graph.match import Match
from ..rules.loading import LoadedRules, parse_rules
from .groups import StageGroup
from .proxy import DEFAULT_PROXY_IMAGES, PROXY_LR
from .sensitivity import SensitivityResult, run_sensitivity, stage_groups

__all__ = ["Candidate", "PlanResult", "PlanRefused", "plan_conversion", "choose", "close_calls", "same_speed",
           "candidate_rules", "plan_on_data", "plot_plan"]


PRUNE_ONLY = "prune"
"""The rule name of a candidate that only prunes channels (no rule, no shrinking)."""


@dataclass
class Candidate:
    """One measured conversion: a rule restricted to some stages."""

    rule: str
    groups: list[StageGroup]  # the stages converted, in order ('other': the unstaged layers)
    layers: list[str]
    top1: float
    drop: float
    params: int
    macs: int
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms
    original_ms: dict[int, float] = field(default_factory=dict)
    verdicts: dict[int, str] = field(default_factory=dict)  # batch size -> faster / slower / same (within noise)
    pareto: bool = False
    margins: dict[int, float] = field(default_factory=dict)  # batch size -> relative noise margin of the ratio
    rounds: dict[int, int] = field(default_factory=dict)  # batch size -> timed rounds (re-timed rounds included)
    shrunk: list[str] = field(default_factory=list)  # layers shrunk geometry-exactly besides the rule's
    prune: float | None = None  # channel-pruning ratio applied after the rule (None: no pruning)
    prune_label: str = ""  # the pruning method when not L1 uniform (pruning.prune_label: "-group-norm-global"...)
    top1_before_proxy: float | None = None  # the old score (after preparation only) when a proxy scored ``top1``
    samples: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict, repr=False)
    """Batch size -> (original, candidate) seconds of every round, paired as they were interleaved."""

    @property
    def name(self) -> str:
        """``maxpool: stage 1, stage 3`` (``+ shrink`` when layers it leaves are shrunk geometry-exactly)."""
        pruned = f" + prune {self.prune:g}{self.prune_label}" if self.prune else ""
        if self.rule == PRUNE_ONLY:
            return f"prune {self.prune:g}{self.prune_label}"
        extra = " + shrink" if self.shrunk and self.rule != SHRINK_RULE else ""
        return f"{self.rule}: {', '.join(str(g) for g in self.groups)}{extra}{pruned}"

    def ratio(self, batch_size: int) -> float:
        """Latency converted / original at ``batch_size`` (below 1 is faster)."""
        return self.latency_ms[batch_size] / self.original_ms[batch_size]

    @property
    def worst_ratio(self) -> float:
        """The largest latency ratio over the batch sizes measured."""
        return max(self.ratio(bs) for bs in self.latency_ms)

    @property
    def worst_margin(self) -> float:
        """The relative noise margin of :attr:`worst_ratio` (0 when unknown)."""
        worst = max(self.latency_ms, key=self.ratio)
        return self.margins.get(worst, 0.0)

    def add_rounds(self, batch_size: int, original_s: Sequence[float], candidate_s: Sequence[float],
                   backend: str = "", label: str = "") -> None:
        """Pool more interleaved rounds (seconds) with this candidate's earlier ones at ``batch_size`` and redo its
        figures there: the medians, the ratio's noise margin and the verdict
        (:func:`pfconvert.report.report.compare_timings`)."""
        from ..report.report import compare_timings

        before, mine = self.samples.setdefault(batch_size, ([], []))
        before.extend(original_s)
        mine.extend(candidate_s)
        row = compare_timings(backend, label, batch_size, before, mine)
        self.original_ms[batch_size], self.latency_ms[batch_size] = row.original_ms, row.converted_ms
        self.margins[batch_size], self.verdicts[batch_size], self.rounds[batch_size] = row.margin, row.verdict, row.runs

    @property
    def pays_off(self) -> bool:
        """Faster at one batch size at least, slower at none."""
        from ..report.report import FASTER, SLOWER

        values = list(self.verdicts.values())
        return bool(values) and SLOWER not in values and FASTER in values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (each group as its label: ``stage 2``, ``other``)."""
        data = asdict(self)
        data.pop("samples")
        data["groups"] = [g.to_json() for g in self.groups]
        data["name"] = self.name
        data["pays_off"] = self.pays_off
        return data


@dataclass
class Retiming:
    """How the close calls were timed again: the bounds, the passes run, who was re-timed, what is left."""

    max_passes: int
    max_seconds: float
    passes: int = 0
    seconds: float = 0.0
    retimed: list[str] = field(default_factory=list)  # candidate names, each once, in the order first re-timed
    unresolved: list[str] = field(default_factory=list)  # close calls left when the bounds were reached
    out_of_order: list[str] = field(default_factory=list)  # of those, the ones whose verdicts disagree with the ratios

    def describe(self) -> str:
        """One line for the table's caption."""
        if not self.retimed:
            return (f"close calls not re-timed (no pass allowed): {_names(self.unresolved)}" if self.unresolved
                    else "no close call to re-time")
        text = (f"{len(self.retimed)} close call(s) re-timed with the original in {self.passes} extra pass(es) "
                f"({self.seconds:.0f} s; at most {self.max_passes} passes, none started after "
                f"{self.max_seconds:.0f} s)")
        if self.out_of_order:
            text += f"; verdicts still out of ratio order for {_names(self.out_of_order)}"
        elif self.unresolved:
            text += f"; still within the noise: {_names(self.unresolved)}"
        return text


def _names(names: list[str], most: int = 3) -> str:
    return ", ".join(f"'{n}'" for n in names) if len(names) <= most else f"{len(names)} candidates"


@dataclass
class PlanResult:
    """The original's accuracy and stats, the sensitivity study of each rule, every candidate, and the choice."""

    base_top1: float
    base_params: int
    base_macs: int
    backend: str
    backend_label: str
    batch_sizes: list[int]
    max_drop: float
    candidates: list[Candidate] = field(default_factory=list)
    sensitivity: dict[str, SensitivityResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it gave no candidate
    chosen: Candidate | None = None
    chosen_rules: LoadedRules | None = None
    retiming: Retiming | None = None
    shrinkable: list[str] = field(default_factory=list)  # convs with kernel taps out of play at this input size
    proxy: dict[str, Any] | None = None  # how candidates were scored when a proxy distillation ran (its settings)

    def front(self) -> list[Candidate]:
        """The Pareto-optimal candidates (accuracy drop vs worst-case latency ratio), fastest first."""
        return sorted((c for c in self.candidates if c.pareto), key=lambda c: c.worst_ratio)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"base_top1": self.base_top1, "base_params": self.base_params, "base_macs": self.base_macs,
                "backend": self.backend, "backend_label": self.backend_label, "batch_sizes": self.batch_sizes,
                "max_drop": self.max_drop, "candidates": [c.to_dict() for c in self.candidates],
                "sensitivity": {k: v.to_dict() for k, v in self.sensitivity.items()}, "skipped": self.skipped,
                "chosen": self.chosen.name if self.chosen is not None else None,
                "retiming": asdict(self.retiming) if self.retiming is not None else None,
                "shrinkable": self.shrinkable, "proxy": self.proxy}


class PlanRefused(PfconvertError):
    """The planner's refusal: no candidate is within the accuracy budget and faster than the original (without being
    slower anywhere). :attr:`result` holds everything that was measured (the table the CLI prints)."""

    def __init__(self, message: str, result: PlanResult) -> None:
        super().__init__(message)
        self.result: PlanResult = result

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (e.g. across processes) with its result
        return type(self), (str(self), self.result)


def __getattr__(name: str) -> Any:
    """``NoPayoff``: the earlier name of :class:`PlanRefused`, kept for one release (warns; the same class, so
    ``except NoPayoff`` still catches the refusal)."""
    if name == "NoPayoff":
        from .._deprecated import _warn

        _warn("pfconvert.study.plan.NoPayoff", "PlanRefused")
        return PlanRefused
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _mark_pareto(candidates: list[Candidate]) -> None:
    for c in candidates:
        c.pareto = not any(o is not c and o.drop <= c.drop and o.worst_ratio <= c.worst_ratio
                           and (o.drop < c.drop or o.worst_ratio < c.worst_ratio) for o in candidates)


def candidate_rules(rules: LoadedRules, groups: dict[StageGroup, list[Match]],
                    chosen: Sequence[StageGroup]) -> LoadedRules:
    """``rules`` restricted to the layers of the ``chosen`` stage groups: by ``stages`` when every chosen group is a
    stage (readable, and it applies to any model of the same layout), else ('other' among them) by the layers'
    paths."""
    staged = all(group.staged for group in chosen)
    out = []
    for rule in rules.ruleset.rules:
        members = [m for group in chosen for m in groups[group] if m.rule.name == rule.name]
        if not members:
            continue
        data = rule.model_dump(mode="json", exclude_none=True)
        if staged:
            data["match"]["stages"] = sorted({group.stage for group in chosen if group.stage is not None})
        else:
            data["match"].pop("every_nth", None)
            data["match"].pop("offset", None)
            data["match"]["path"] = sorted(m.site.path for m in members)
        out.append(data)
    doc = {"name": f"{rules.name}-planned",
           "description": f"Rule '{rules.name}' on {', '.join(str(g) for g in chosen)} only (written by pfconvert "
                          "plan).",
           "rules": out}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<plan>")


def same_speed(candidate: Candidate, fastest: Candidate) -> bool:
    """Whether ``candidate``'s worst latency ratio is within the noise of ``fastest``'s: above it by no more than
    their combined noise margin (the two margins added in quadrature), and never less than MIN_MARGIN (3%)."""
    from ..report.report import MIN_MARGIN

    tolerance = max(MIN_MARGIN, math.hypot(candidate.worst_margin, fastest.worst_margin))
    return candidate.worst_ratio <= fastest.worst_ratio * (1 + tolerance)


def choose(eligible: Sequence[Candidate]) -> Candidate:
    """The fastest candidate, where "fastest" is read within the timing noise: of those as fast as the lowest worst
    latency ratio within the noise (:func:`same_speed`), the one that loses the least accuracy (then the faster)."""
    fastest = min(eligible, key=lambda c: c.worst_ratio)
    near = [c for c in eligible if same_speed(c, fastest)]
    return min(near, key=lambda c: (c.drop, c.worst_ratio))


_ORDER = {"faster": 0, "slower": 2}


def _out_of_order(candidates: Sequence[Candidate], batch_sizes: Sequence[int]) -> list[Candidate]:
    """Candidates whose verdict at some batch size disagrees with the order of the ratios: called faster while one
    with a lower ratio is not, or not called slower while one with a lower ratio is."""
    bad: dict[int, Candidate] = {}
    for bs in batch_sizes:
        for a in candidates:
            for b in candidates:
                if a.ratio(bs) < b.ratio(bs) and _ORDER.get(a.verdicts[bs], 1) > _ORDER.get(b.verdicts[bs], 1):
                    bad[id(a)], bad[id(b)] = a, b
    return [c for c in candidates if id(c) in bad]


def close_calls(candidates: Sequence[Candidate], max_drop: float, batch_sizes: Sequence[int]) -> list[Candidate]:
    """The candidates within ``max_drop`` whose timing could still change the choice with more rounds: verdicts out
    of the order of the ratios (:func:`_out_of_order`), a ratio beyond the 3% floor but called the same (its own
    margin decided), or, among those that pay off, within the noise of the fastest while their margin is above the
    floor (more rounds may tell them apart)."""
    from ..report.report import MIN_MARGIN, SAME

    eligible = [c for c in candidates if c.drop <= max_drop]
    close = {id(c) for c in _out_of_order(eligible, batch_sizes)}
    floor = math.log1p(MIN_MARGIN)
    close |= {id(c) for c in eligible for bs in batch_sizes
              if c.verdicts[bs] == SAME and abs(math.log(c.ratio(bs))) > floor}
    paying = [c for c in eligible if c.pays_off]
    if len(paying) > 1:
        fastest = min(paying, key=lambda c: c.worst_ratio)
        near = [c for c in paying if same_speed(c, fastest)]
        if len(near) > 1:
            close |= {id(c) for c in near if max(c.margins.values(), default=0.0) > MIN_MARGIN}
    return [c for c in eligible if id(c) in close]


def plan_conversion(
    model: nn.Module,
    rules: Sequence[LoadedRules],
    input_size: tuple[int, int, int],
    evaluate: Callable[[nn.Module], float],
    time_models: Callable[[dict[str, nn.Module]], dict[int, dict[str, list[float]]]],
    count_macs: Callable[[nn.Module], int],
    *,
    backend: str,
    backend_label: str,
    batch_sizes: Sequence[int],
    max_drop: float,
    prepare: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    shrink: bool = True,
    retime_passes: int = 3,
    retime_seconds: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    prune_ratios: Sequence[float] = (),
    prune_round_to: int = 8,
    prune_importance: str = "l1",
    prune_global: bool = False,
    recalibrate: Callable[[nn.Module], None] | None = None,
    proxy: Callable[[nn.Module], None] | None = None,
) -> PlanResult:
    """Search, measure and choose (see the module docstring).

    Args:
        model: the original model, trained (not modified).
        rules: the candidate rules.
        input_size: (C, H, W) of the traced forward and of the timing.
        evaluate: top-1 (percent) of a model on the validation images.
        time_models: ``{name: model}`` (``original`` among them) -> ``{batch size: {name: [seconds per round]}}``,
            every model timed in the same interleaved rounds (round ``i`` of each model paired with round ``i`` of
            the original).
        count_macs: MACs of one forward at batch 1.
        backend, backend_label: the backend's name and label (for the result).
        batch_sizes: the batch sizes ``time_models`` measures.
        max_drop: the accuracy budget (top-1 points) of the choice.
        prepare: called on each candidate before evaluation (reconstruction, BatchNorm re-estimation).
        on_step: progress callback (a short text).
        shrink: shrink, geometry-exactly, the convs whose input map keeps kernel taps out of play, in every
            candidate (on the layers its rule leaves), and add shrinking alone as a candidate.
        retime_passes: at most this many extra timing passes of the close calls (0: none).
        retime_seconds: no re-timing pass starts once this many seconds have gone by since the first.
        clock: seconds, for ``retime_seconds`` (a test passes a fake one).
        prune_ratios: channel-pruning ratios (Torch-Pruning's magnitude pruner, ``pfconvert[prune]``): each is a
            candidate alone (after shrinking, when on) and combined with every rule x stage candidate (pruned after
            its rule).
        prune_round_to: pruned channel counts are kept multiples of this.
        prune_importance: which channels pruning removes (``"l1"`` or ``"group-norm"``,
            :data:`pfconvert.conversion.pruning.PRUNE_IMPORTANCES`).
        prune_global: rank all layers' channels together (one global ratio, each layer capped) instead of the same
            ratio in every layer.
        recalibrate: called on each pruned candidate before evaluation (BatchNorm re-estimation; a reconstruction
            against the original does not apply to pruned channels); default ``prepare``.
        proxy: called, after its preparation, on a copy of each candidate (the shrunk and pruned ones too) before
            that copy is scored: a short distillation from the original (:class:`pfconvert.study.proxy.DistillProxy`)
            whose score predicts the fine-tuned order; the score before it is kept as ``top1_before_proxy``. The
            stage ranking of the sensitivity study stays on the scores before it. None: the old scoring.

    Raises:
        PlanRefused: no candidate pays off within ``max_drop`` (its ``.result`` holds the measured table).
        RuleError: no rule matched any layer.
        PfconvertError: an unknown pruning importance (checked before any work).
    """
    from ..graph.modules import count_params

    if prune_ratios:
        from ..conversion.pruning import check_prune_method

        check_prune_method(prune_importance, prune_global, where="--prune-importance")
    step = on_step or (lambda text: None)

    def score(variant: nn.Module, known: float | None = None) -> tuple[float, float | None]:
        """(the candidate's score, the score before the proxy or None without one)."""
        before = known if known is not None else evaluate(variant)
        if proxy is None:
            return before, None
        trained = copy.deepcopy(variant)  # the variant stays as prepared: pruning and timing start from it
        proxy(trained)
        return evaluate(trained), before

    step("evaluating the original")
    base_top1 = evaluate(model)
    result = PlanResult(base_top1, count_params(model), count_macs(model), backend, backend_label, list(batch_sizes),
                        max_drop)
    variants: dict[str, nn.Module] = {}
    groups_of: dict[str, dict[StageGroup, list[Match]]] = {}
    shrink_matches: list[Match] = []
    if shrink:
        result.shrinkable = shrinkable_layers(model, input_size)
        if result.shrinkable:
            shrink_matches, shrink_flow = match_rules(model, with_shrink(None, result.shrinkable), input_size)  # type: ignore[arg-type]
            step(f"shrink: {len(shrink_matches)} conv(s) with kernel taps out of play")
            variant = copy.deepcopy(model)
            apply_matches(variant, shrink_matches, shrink_flow)
            if proxy is not None:
                step("shrink: proxy distillation")
            top1, before = score(variant)  # exact: nothing to prepare
            cand = Candidate(SHRINK_RULE, sorted(stage_groups(shrink_matches)), [], top1, base_top1 - top1,
                             count_params(variant), count_macs(variant), shrunk=list(result.shrinkable),
                             top1_before_proxy=before)
            result.candidates.append(cand)
            variants[cand.name] = variant
    for rules_ in rules:
        matches, flow = match_rules(model, rules_, input_size)
        if not matches:
            result.skipped[rules_.name] = "matched no layer"
            continue
        groups = groups_of[rules_.name] = stage_groups(matches)
        try:
            sens = run_sensitivity(model, rules_, input_size, evaluate, None, prepare=prepare, base_top1=base_top1,
                                   on_group=lambda g, i, n, r=rules_.name: step(f"{r}: stage sensitivity {i + 1}/{n}"
                                                                                 f" ({g})") if i >= 0 else None)
        except RuleError as exc:  # the guard: this rule empties a residual branch
            result.skipped[rules_.name] = str(exc)
            continue
        result.sensitivity[rules_.name] = sens
        ranked = [cast(StageGroup, g.group) for g in sens.ranked()]  # a study by stage (the default)
        by_group = {g.group: g for g in sens.groups}
        for k in range(1, len(ranked) + 1):
            chosen = ranked[:k]
            step(f"{rules_.name}: candidate {k}/{len(ranked)} ({', '.join(str(g) for g in chosen)})")
            members = sorted((m for group in chosen for m in groups[group]), key=lambda m: m.site.call.index)
            converted = {m.site.path for m in members}
            extra = [m for m in shrink_matches if m.site.path not in converted]
            variant = copy.deepcopy(model)
            apply_matches(variant, sorted(members + extra, key=lambda m: m.site.call.index), flow)
            known = None
            if k == 1:  # measured by the sensitivity study (shrinking is exact); timing does not depend on weights
                known = by_group[chosen[0]].top1
            if (k > 1 or proxy is not None) and prepare is not None:
                prepare(variant)
            top1, before = score(variant, known)
            cand = Candidate(rules_.name, sorted(chosen), [m.site.path for m in members], top1,
                             base_top1 - top1, count_params(variant), count_macs(variant),
                             shrunk=[m.site.path for m in extra], top1_before_proxy=before)
            result.candidates.append(cand)
            variants[cand.name] = variant
    if prune_ratios:
        _add_pruned(result, model, variants, input_size, prune_ratios, prune_round_to, score, count_macs,
                    recalibrate or prepare, step, prune_importance, prune_global)
    if not result.candidates:
        raise RuleError("no candidate rule matched a layer of the model: "
                        + "; ".join(f"{k}: {v}" for k, v in result.skipped.items()))
    step(f"timing the original and {len(variants)} candidates side by side on {backend_label}")
    timings = time_models({"original": model, **variants})
    for cand in result.candidates:
        for bs, times in timings.items():
            cand.add_rounds(bs, times["original"], times[cand.name], backend, backend_label)
    result.retiming = _retime(result, model, variants, time_models, retime_passes, retime_seconds, clock, step)
    _mark_pareto(result.candidates)
    eligible = [c for c in result.candidates if c.pays_off and c.drop <= max_drop]
    if eligible:
        result.chosen = choose(eligible)
        result.chosen_rules = _rules_of(result.chosen, rules, groups_of, prune_round_to, prune_importance,
                                        prune_global)
        return result
    paying = [c for c in result.candidates if c.pays_off]
    why = (f"the {len(paying)} that are faster lose more than {max_drop} top-1 points (least: "
           f"{min(c.drop for c in paying):.2f})" if paying else "none of the candidates is faster without being "
           "slower at some batch size")
    raise PlanRefused(f"no conversion pays off on {backend}: {why}; see the table (raise --max-drop, or keep the "
                      "original)", result)


def _add_pruned(result: PlanResult, model: nn.Module, variants: dict[str, nn.Module],
                input_size: tuple[int, int, int], ratios: Sequence[float], round_to: int,
                score: Callable[[nn.Module], tuple[float, float | None]], count_macs: Callable[[nn.Module], int],
                recalibrate: Callable[[nn.Module], None] | None, step: Callable[[str], None], importance: str = "l1",
                global_pruning: bool = False) -> None:
    """Each ratio as a candidate alone (on the shrunk model when shrinking is on) and after every rule candidate."""
    from ..conversion.pruning import prune_channels, prune_label
    from ..graph.modules import count_params

    bases: list[Candidate | None] = [c for c in result.candidates if c.prune is None]
    if not any(c.rule == SHRINK_RULE for c in bases):
        bases.insert(0, None)  # the original itself
    for ratio in ratios:
        for index, base in enumerate(bases):
            step(f"prune {ratio:g}: candidate {index + 1}/{len(bases)}")
            variant = copy.deepcopy(variants[base.name] if base is not None else model)
            prune_channels(variant, ratio, input_size, round_to, importance, global_pruning)
            if recalibrate is not None:
                recalibrate(variant)
            top1, before = score(variant)
            if base is None:
                cand = Candidate(PRUNE_ONLY, [], [], top1, result.base_top1 - top1, count_params(variant),
                                 count_macs(variant), prune=ratio, top1_before_proxy=before,
                                 prune_label=prune_label(importance, global_pruning))
            else:
                cand = Candidate(base.rule, list(base.groups), list(base.layers), top1, result.base_top1 - top1,
                                 count_params(variant), count_macs(variant), shrunk=list(base.shrunk), prune=ratio,
                                 top1_before_proxy=before, prune_label=prune_label(importance, global_pruning))
            result.candidates.append(cand)
            variants[cand.name] = variant


def _rules_of(chosen: Candidate, rules: Sequence[LoadedRules], groups_of: dict[str, dict[StageGroup, list[Match]]],
              round_to: int = 8, importance: str = "l1", global_pruning: bool = False) -> LoadedRules:
    """The rule file of a candidate: its rule on its stages, then the shrink rule of the layers it shrinks, then its
    channel pruning (a ``prune:`` section)."""
    if chosen.rule in (SHRINK_RULE, PRUNE_ONLY):
        written = with_shrink(None, chosen.shrunk)
    else:
        source = next(r for r in rules if r.name == chosen.rule)
        written = with_shrink(candidate_rules(source, groups_of[source.name], chosen.groups), chosen.shrunk)
    if chosen.prune:
        from ..conversion.pruning import with_prune

        written = with_prune(written, chosen.prune, round_to, importance, global_pruning)
    return written  # type: ignore[return-value]


def _retime(result: PlanResult, model: nn.Module, variants: dict[str, nn.Module],
            time_models: Callable[[dict[str, nn.Module]], dict[int, dict[str, list[float]]]], passes: int,
            seconds: float, clock: Callable[[], float], step: Callable[[str], None]) -> Retiming:
    """Time the close calls again with the original, pooling their rounds, within the bounds (module docstring)."""
    log = Retiming(passes, seconds)
    start = clock()
    sizes = result.batch_sizes
    while log.passes < passes and clock() - start < seconds:
        close = close_calls(result.candidates, result.max_drop, sizes)
        if not close:
            break
        step(f"re-timing {len(close)} close call(s) with the original (pass {log.passes + 1}/{passes})")
        timings = time_models({"original": model, **{c.name: variants[c.name] for c in close}})
        for cand in close:
            for bs, times in timings.items():
                cand.add_rounds(bs, times["original"], times[cand.name], result.backend, result.backend_label)
            if cand.name not in log.retimed:
                log.retimed.append(cand.name)
        log.passes += 1
    log.seconds = clock() - start
    log.unresolved = [c.name for c in close_calls(result.candidates, result.max_drop, sizes)]
    log.out_of_order = [c.name for c in _out_of_order([c for c in result.candidates if c.drop <= result.max_drop],
                                                       sizes)]
    return log


@renamed_kwargs(calib_images="bn_recalib_images")
def plan_on_data(model: nn.Module, rules: Sequence[LoadedRules], data: str, *, backend: str = "cpu",
                 batch_sizes: Sequence[int] = (1, 32), max_drop: float = 1.0, data_cfg: DataConfig | None = None,
                 img_size: int | None = None, limit_val: int | None = 2000, bn_recalib_images: int = 512,
                 reconstruct_images: int = 256, val_split: float = 0.1, batch_size: int = 64, runs: int = 10,
                 max_seconds: float = 20.0, deploy_method: str = "auto", on_step: Callable[[str], None] | None = None,
                 notes: list[str] | None = None, int8_calib_images: int = 300, shrink: bool = True,
                 retime_passes: int = 3, retime_seconds: float = 120.0, prune_ratios: Sequence[float] = (),
                 prune_round_to: int = 8, prune_importance: str = "l1", prune_global: bool = False,
                 proxy_images: int = DEFAULT_PROXY_IMAGES, proxy_seed: int = 0,
                 proxy_lr: float = PROXY_LR) -> PlanResult:
    """:func:`plan_conversion` on real data and a real backend.

    Accuracy: top-1 on (a fixed subset of) the validation split carved from the training images (never the test
    split), each candidate first reconstructed (least-squares refit of the layers reading its replacements, on
    ``reconstruct_images`` training images) and its BatchNorm re-estimated (on ``bn_recalib_images`` training images).
    Latency: the backend (``cpu``: the deployed PyTorch path, ``cpu-eager``, ``ort``, ``cuda``...) at each batch size,
    the original and every candidate in the same interleaved rounds (``runs`` rounds, at most ``max_seconds`` per batch
    size; each re-timing pass of the close calls the same). On an int8 backend (``ort-int8``, ``ov-int8``) the original
    and every candidate are scored as deployed: quantized on ``int8_calib_images`` training images, then evaluated on
    the runtime (an int8 candidate is scored in int8). ``shrink``, ``retime_passes``, ``retime_seconds``,
    ``prune_ratios``, ``prune_round_to``, ``prune_importance`` and ``prune_global`` as :func:`plan_conversion` (pruned
    candidates get BatchNorm re-estimation, no reconstruction). ``proxy_images``: each candidate, once prepared, is
    distilled from the original on that many training images (:class:`pfconvert.study.proxy.DistillProxy`, seeded by
    ``proxy_seed``, peak rate ``proxy_lr``) before it is scored, a proxy of the fine-tuned result; 0: scored right after
    its preparation (the old scoring). Other arguments as :func:`pfconvert.study.sensitivity_on_data`.

    Raises:
        PlanRefused: nothing pays off within ``max_drop`` (``.result`` holds the measured table).
        DataError: bad limits, or the data's classes differ from the model's.
    """
    from ..recover.refit import reconstruct
    from ..report.backends import backend_label
    from ..report.counting import count_macs
    from ..report.latency import LatencyConfig, measure
    from .sensitivity import validation_tools

    if reconstruct_images < 0:
        raise DataError(f"reconstruct_images must be 0 (off) or more, got {reconstruct_images}")
    if proxy_images < 0:
        raise DataError(f"proxy_images must be 0 (off) or more, got {proxy_images}")
    tools = validation_tools(model, data, data_cfg=data_cfg, img_size=img_size, limit_val=limit_val,
                             bn_recalib_images=bn_recalib_images, val_split=val_split, batch_size=batch_size,
                             notes=notes)
    size = tools.input_size
    batches = tools.calib_batches(reconstruct_images) if reconstruct_images else []
    label = backend_label(backend, deploy_method)
    methods: list[str] = []
    score, calibration = _scorer(backend, tools, size, int8_calib_images, data, notes)
    proxy = None
    if proxy_images:
        from ..data.config import resolve_data_config
        from .proxy import DistillProxy

        cfg = data_cfg if data_cfg is not None else resolve_data_config(model)
        proxy = DistillProxy.build(model, data, cfg.with_size(img_size) if img_size else cfg, images=proxy_images,
                                   val_split=val_split, seed=proxy_seed, lr=proxy_lr, batch_size=batch_size)
        if notes is not None:
            notes.append(proxy.describe())

    def prepare(variant: nn.Module) -> None:
        if batches:
            reconstruct(variant, model, batches, input_size=size)
        tools.recalibrate(variant)

    def time_models(models: dict[str, nn.Module]) -> dict[int, dict[str, list[float]]]:
        cfg = LatencyConfig(batch_sizes=tuple(batch_sizes), input_size=size, runs=runs, warmup=2,
                            max_seconds=max_seconds, deploy_method=deploy_method, calibration=calibration)
        with warnings.catch_warnings():  # a deploy fallback (llga -> jit) is said once, in the backend label
            warnings.simplefilter("ignore", RuntimeWarning)
            timings = measure(models, [backend], cfg,
                              progress=(lambda t: on_step(f"timing: {t}")) if on_step else None)
        methods.extend(timings.methods.values())
        return {bs: {key: list(t) for key, t in times.items()} for (_, bs), times in timings.items()}

    def relabel(result: PlanResult) -> PlanResult:
        result.proxy = proxy.to_dict() if proxy is not None else None
        used = sorted({m for text in methods for m in text.split(" / ")})
        if used and backend == "cpu":
            result.backend_label = backend_label(backend, " / ".join(used))
        return result

    try:
        return relabel(plan_conversion(model.eval(), rules, size, score, time_models,
                                       lambda m: count_macs(m, size).macs, backend=backend, backend_label=label,
                                       batch_sizes=batch_sizes, max_drop=max_drop, prepare=prepare, on_step=on_step,
                                       shrink=shrink, retime_passes=retime_passes, retime_seconds=retime_seconds,
                                       prune_ratios=prune_ratios, prune_round_to=prune_round_to,
                                       prune_importance=prune_importance, prune_global=prune_global,
                                       recalibrate=tools.recalibrate, proxy=proxy))
    except PlanRefused as exc:
        relabel(exc.result)
        raise


def _scorer(backend: str, tools: Any, size: tuple[int, int, int], count: int, data: str,
            notes: list[str] | None) -> tuple[Callable[[nn.Module], float], Any]:
    """How candidates are scored on ``backend``: PyTorch's top-1 (fp32 runtimes compute the same within 1e-4), or,
    on an int8 backend, the top-1 of the model quantized on ``count`` training images and run on that runtime."""
    from ..report.backends import is_int8

    if not is_int8(backend):
        return tools.top1, None
    import torch

    from ..deploy.quantize import Calibration
    from ..deploy.runtime import deploy

    if count < 1:
        raise DataError(f"int8 calibration images must be at least 1, got {count}")
    images = torch.cat(tools.calib_batches(count))
    calibration = Calibration.from_tensor(images, f"{len(images)} training images of {data}")
    if notes is not None:
        notes.append(f"{calibration.describe()}; the original and every candidate are scored in int8 on {backend}")

    def score(m: nn.Module) -> float:
        return tools.top1(deploy(m, backend, size, calibration))

    return score, calibration


def plot_plan(result: PlanResult, path: str | Path) -> Path:
    """A PNG of top-1 vs latency ratio, one panel per batch size: every candidate, the Pareto front joined, the
    original at (1, its top-1), the choice circled."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .._files import atomic_write

    sizes = result.batch_sizes
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    fig.suptitle(f"pfconvert plan: top-1 (validation) vs latency on {result.backend_label}", fontsize=11)
    rules = sorted({c.rule for c in result.candidates})
    for ax, bs in zip(axes[0], sizes):
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.scatter([1.0], [result.base_top1], marker="*", s=140, color="black", label="original", zorder=3)
        for i, rule in enumerate(rules):
            mine = [c for c in result.candidates if c.rule == rule]
            ax.scatter([c.ratio(bs) for c in mine], [c.top1 for c in mine], s=28, color=f"C{i}", label=rule, zorder=2)
        front = sorted(result.front(), key=lambda c: c.ratio(bs))
        ax.plot([c.ratio(bs) for c in front], [c.top1 for c in front], color="grey", lw=0.8, zorder=1)
        if result.chosen is not None:
            ax.scatter([result.chosen.ratio(bs)], [result.chosen.top1], s=160, facecolors="none", edgecolors="red",
                       label="chosen", zorder=4)
        ax.set_xlabel(f"latency converted / original, batch {bs} (left is faster)")
        ax.set_ylabel("top-1 % (validation split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
