"""Plan a conversion: search rules x stage subsets, measure each candidate, keep the Pareto front, pick the best.

For each candidate rule the search starts with the sensitivity study (:func:`pfconvert.study.run_sensitivity`: each
stage converted alone, accuracy measured after the same preparation), ranks the stages from the least to the most
harmful, and then measures the greedy prefixes of that ranking: the least harmful stage, the two least harmful, ...,
every stage (the rule as written). Each candidate's accuracy is measured after its preparation (reconstruction and
BatchNorm re-estimation on calibration images, when the caller's ``prepare`` does them); all candidates are then
timed side by side with the original, in the same interleaved rounds, on one backend at each batch size.

A candidate *pays off* when it is faster than the original at one batch size at least and slower at none (speed-ups
within the noise margin count as neither). The plan picks, among those within ``max_drop`` top-1 points, the one with
the best worst-case latency ratio, read within the noise (:func:`choose`: of the candidates within 3% of the best
ratio, the most accurate); it never picks one that is slower anywhere. Evaluation, preparation and timing
are passed in as callables, as for the sensitivity study.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .._deprecated import renamed_kwargs
from ..conversion.rewrite import apply_matches, match_rules
from ..data.config import DataConfig
from ..errors import DataError, PfconvertError, RuleError
from ..graph.match import Match
from ..rules.loading import LoadedRules, parse_rules
from .sensitivity import SensitivityResult, group_matches, run_sensitivity

__all__ = ["Candidate", "PlanResult", "NoPayoff", "plan_conversion", "choose", "candidate_rules", "plan_on_data",
           "plot_plan"]


class NoPayoff(PfconvertError):
    """No candidate is within the accuracy budget and faster than the original (without being slower anywhere)."""


@dataclass
class Candidate:
    """One measured conversion: a rule restricted to some stages."""

    rule: str
    groups: list[str]  # the stage groups converted ('stage 2', ...; 'other' for unstaged layers)
    layers: list[str]
    top1: float
    drop: float
    params: int
    macs: int
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms
    original_ms: dict[int, float] = field(default_factory=dict)
    verdicts: dict[int, str] = field(default_factory=dict)  # batch size -> faster / slower / same (within noise)
    pareto: bool = False

    @property
    def name(self) -> str:
        """``maxpool: stage 1, stage 3`` (or ``maxpool: all stages``)."""
        return f"{self.rule}: {', '.join(self.groups)}"

    def ratio(self, batch_size: int) -> float:
        """Latency converted / original at ``batch_size`` (below 1 is faster)."""
        return self.latency_ms[batch_size] / self.original_ms[batch_size]

    @property
    def worst_ratio(self) -> float:
        """The largest latency ratio over the batch sizes measured."""
        return max(self.ratio(bs) for bs in self.latency_ms)

    @property
    def pays_off(self) -> bool:
        """Faster at one batch size at least, slower at none."""
        from ..report.report import FASTER, SLOWER

        values = list(self.verdicts.values())
        return bool(values) and SLOWER not in values and FASTER in values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["name"] = self.name
        data["pays_off"] = self.pays_off
        return data


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

    def front(self) -> list[Candidate]:
        """The Pareto-optimal candidates (accuracy drop vs worst-case latency ratio), fastest first."""
        return sorted((c for c in self.candidates if c.pareto), key=lambda c: c.worst_ratio)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"base_top1": self.base_top1, "base_params": self.base_params, "base_macs": self.base_macs,
                "backend": self.backend, "backend_label": self.backend_label, "batch_sizes": self.batch_sizes,
                "max_drop": self.max_drop, "candidates": [c.to_dict() for c in self.candidates],
                "sensitivity": {k: v.to_dict() for k, v in self.sensitivity.items()}, "skipped": self.skipped,
                "chosen": self.chosen.name if self.chosen is not None else None}


def _mark_pareto(candidates: list[Candidate]) -> None:
    for c in candidates:
        c.pareto = not any(o is not c and o.drop <= c.drop and o.worst_ratio <= c.worst_ratio
                           and (o.drop < c.drop or o.worst_ratio < c.worst_ratio) for o in candidates)


def candidate_rules(rules: LoadedRules, groups: dict[str, list[Match]], chosen: Sequence[str]) -> LoadedRules:
    """``rules`` restricted to the layers of the ``chosen`` stage groups: by ``stages`` when every chosen group is a
    stage (readable, and it applies to any model of the same layout), else by the layers' paths."""
    staged = all(name.startswith("stage ") for name in chosen)
    out = []
    for rule in rules.ruleset.rules:
        members = [m for name in chosen for m in groups[name] if m.rule.name == rule.name]
        if not members:
            continue
        data = rule.model_dump(mode="json", exclude_none=True)
        if staged:
            data["match"]["stages"] = sorted({int(name.split()[1]) for name in chosen})
        else:
            data["match"].pop("every_nth", None)
            data["match"].pop("offset", None)
            data["match"]["path"] = sorted(m.site.path for m in members)
        out.append(data)
    doc = {"name": f"{rules.name}-planned",
           "description": f"Rule '{rules.name}' on {', '.join(chosen)} only (written by pfconvert plan).",
           "rules": out}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<plan>")


def choose(eligible: Sequence[Candidate]) -> Candidate:
    """The fastest candidate, where "fastest" is read within the timing noise: of those whose worst latency ratio is
    within MIN_MARGIN of the lowest, the one that loses the least accuracy (then the faster)."""
    from ..report.report import MIN_MARGIN

    best = min(c.worst_ratio for c in eligible)
    near = [c for c in eligible if c.worst_ratio <= best * (1 + MIN_MARGIN)]
    return min(near, key=lambda c: (c.drop, c.worst_ratio))


def plan_conversion(
    model: nn.Module,
    rules: Sequence[LoadedRules],
    input_size: tuple[int, int, int],
    evaluate: Callable[[nn.Module], float],
    time_models: Callable[[dict[str, nn.Module]], dict[int, dict[str, tuple[float, str]]]],
    count_macs: Callable[[nn.Module], int],
    *,
    backend: str,
    backend_label: str,
    batch_sizes: Sequence[int],
    max_drop: float,
    prepare: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PlanResult:
    """Search, measure and choose (see the module docstring).

    Args:
        model: the original model, trained (not modified).
        rules: the candidate rules.
        input_size: (C, H, W) of the traced forward and of the timing.
        evaluate: top-1 (percent) of a model on the validation images.
        time_models: ``{name: model}`` (``original`` among them) -> ``{batch size: {name: (median ms, verdict)}}``,
            every model timed in the same interleaved rounds; the verdict compares it with the original.
        count_macs: MACs of one forward at batch 1.
        backend, backend_label: the backend's name and label (for the result).
        batch_sizes: the batch sizes ``time_models`` measures.
        max_drop: the accuracy budget (top-1 points) of the choice.
        prepare: called on each candidate before evaluation (reconstruction, BatchNorm re-estimation).
        on_step: progress callback (a short text).

    Raises:
        NoPayoff: no candidate pays off within ``max_drop`` (the result is attached as ``.result``).
        RuleError: no rule matched any layer.
    """
    from ..graph.modules import count_params

    step = on_step or (lambda text: None)
    step("evaluating the original")
    base_top1 = evaluate(model)
    result = PlanResult(base_top1, count_params(model), count_macs(model), backend, backend_label, list(batch_sizes),
                        max_drop)
    variants: dict[str, nn.Module] = {}
    groups_of: dict[str, dict[str, list[Match]]] = {}
    for rules_ in rules:
        matches, flow = match_rules(model, rules_, input_size)
        if not matches:
            result.skipped[rules_.name] = "matched no layer"
            continue
        groups = groups_of[rules_.name] = group_matches(matches, "stage")
        try:
            sens = run_sensitivity(model, rules_, input_size, evaluate, None, prepare=prepare, base_top1=base_top1,
                                   on_group=lambda g, i, n, r=rules_.name: step(f"{r}: stage sensitivity {i + 1}/{n}"
                                                                                 f" ({g})") if i >= 0 else None)
        except RuleError as exc:  # the guard: this rule empties a residual branch
            result.skipped[rules_.name] = str(exc)
            continue
        result.sensitivity[rules_.name] = sens
        ranked = [g.group for g in sens.ranked()]
        by_group = {g.group: g for g in sens.groups}
        for k in range(1, len(ranked) + 1):
            chosen = ranked[:k]
            step(f"{rules_.name}: candidate {k}/{len(ranked)} ({', '.join(chosen)})")
            members = sorted((m for name in chosen for m in groups[name]), key=lambda m: m.site.call.index)
            variant = copy.deepcopy(model)
            apply_matches(variant, members, flow)
            if k == 1:  # measured by the sensitivity study; timing does not depend on the weights
                top1 = by_group[chosen[0]].top1
            else:
                if prepare is not None:
                    prepare(variant)
                top1 = evaluate(variant)
            cand = Candidate(rules_.name, sorted(chosen, key=_group_order), [m.site.path for m in members], top1,
                             base_top1 - top1, count_params(variant), count_macs(variant))
            result.candidates.append(cand)
            variants[cand.name] = variant
    if not result.candidates:
        raise RuleError("no candidate rule matched a layer of the model: "
                        + "; ".join(f"{k}: {v}" for k, v in result.skipped.items()))
    step(f"timing the original and {len(variants)} candidates side by side on {backend_label}")
    timings = time_models({"original": model, **variants})
    for cand in result.candidates:
        for bs, times in timings.items():
            cand.original_ms[bs] = times["original"][0]
            cand.latency_ms[bs], cand.verdicts[bs] = times[cand.name]
    _mark_pareto(result.candidates)
    eligible = [c for c in result.candidates if c.pays_off and c.drop <= max_drop]
    if eligible:
        result.chosen = choose(eligible)
        source = next(r for r in rules if r.name == result.chosen.rule)
        result.chosen_rules = candidate_rules(source, groups_of[source.name], result.chosen.groups)
        return result
    paying = [c for c in result.candidates if c.pays_off]
    why = (f"the {len(paying)} that are faster lose more than {max_drop} top-1 points (least: "
           f"{min(c.drop for c in paying):.2f})" if paying else "none of the candidates is faster without being "
           "slower at some batch size")
    error = NoPayoff(f"no conversion pays off on {backend}: {why}; see the table (raise --max-drop, or keep the "
                     "original)")
    error.result = result  # type: ignore[attr-defined]
    raise error


def _group_order(name: str) -> tuple[int, int]:
    return (0, int(name.split()[1])) if name.startswith("stage ") else (1, 0)


@renamed_kwargs(calib_images="bn_recalib_images")
def plan_on_data(model: nn.Module, rules: Sequence[LoadedRules], data: str, *, backend: str = "cpu",
                 batch_sizes: Sequence[int] = (1, 32), max_drop: float = 1.0, data_cfg: DataConfig | None = None,
                 img_size: int | None = None, limit_val: int | None = 2000, bn_recalib_images: int = 512,
                 reconstruct_images: int = 256, val_split: float = 0.1, batch_size: int = 64, runs: int = 10,
                 max_seconds: float = 20.0, deploy_method: str = "auto", on_step: Callable[[str], None] | None = None,
                 notes: list[str] | None = None, int8_calib_images: int = 300) -> PlanResult:
    """:func:`plan_conversion` on real data and a real backend.

    Accuracy: top-1 on (a fixed subset of) the validation split carved from the training images (never the test
    split), each candidate first reconstructed (least-squares refit of the layers reading its replacements, on
    ``reconstruct_images`` training images) and its BatchNorm re-estimated (on ``bn_recalib_images`` training images).
    Latency: the backend (``cpu``: the deployed PyTorch path, ``cpu-eager``, ``ort``, ``cuda``...) at each batch size,
    the original and every candidate in the same interleaved rounds. On an int8 backend (``ort-int8``, ``ov-int8``)
    the original and every candidate are scored as deployed: quantized on ``int8_calib_images`` training images,
    then evaluated on the runtime (an int8 candidate is scored in int8). Other arguments as
    :func:`pfconvert.study.sensitivity_on_data`.

    Raises:
        NoPayoff: nothing pays off within ``max_drop`` (``.result`` holds the measured table).
        DataError: bad limits, or the data's classes differ from the model's.
    """
    from ..recover.refit import reconstruct
    from ..report.backends import backend_label
    from ..report.counting import count_macs
    from ..report.latency import LatencyConfig, measure
    from ..report.report import compare_timings, median_ms
    from .sensitivity import validation_tools

    if reconstruct_images < 0:
        raise DataError(f"reconstruct_images must be 0 (off) or more, got {reconstruct_images}")
    tools = validation_tools(model, data, data_cfg=data_cfg, img_size=img_size, limit_val=limit_val,
                             bn_recalib_images=bn_recalib_images, val_split=val_split, batch_size=batch_size,
                             notes=notes)
    size = tools.input_size
    batches = tools.calib_batches(reconstruct_images) if reconstruct_images else []
    label = backend_label(backend, deploy_method)
    methods: list[str] = []
    score, calibration = _scorer(backend, tools, size, int8_calib_images, data, notes)

    def prepare(variant: nn.Module) -> None:
        if batches:
            reconstruct(variant, model, batches, input_size=size)
        tools.recalibrate(variant)

    def time_models(models: dict[str, nn.Module]) -> dict[int, dict[str, tuple[float, str]]]:
        cfg = LatencyConfig(batch_sizes=tuple(batch_sizes), input_size=size, runs=runs, warmup=2,
                            max_seconds=max_seconds, deploy_method=deploy_method, calibration=calibration)
        with warnings.catch_warnings():  # a deploy fallback (llga -> jit) is said once, in the backend label
            warnings.simplefilter("ignore", RuntimeWarning)
            timings = measure(models, [backend], cfg,
                              progress=(lambda t: on_step(f"timing: {t}")) if on_step else None)
        methods.extend(timings.methods.values())
        out: dict[int, dict[str, tuple[float, str]]] = {}
        for (name, bs), times in timings.items():
            base = times["original"]
            out[bs] = {key: (median_ms(t), compare_timings(name, label, bs, base, t).verdict)
                       for key, t in times.items()}
        return out

    def relabel(result: PlanResult) -> PlanResult:
        used = sorted({m for text in methods for m in text.split(" / ")})
        if used and backend == "cpu":
            result.backend_label = backend_label(backend, " / ".join(used))
        return result

    try:
        return relabel(plan_conversion(model.eval(), rules, size, score, time_models,
                                       lambda m: count_macs(m, size).macs, backend=backend, backend_label=label,
                                       batch_sizes=batch_sizes, max_drop=max_drop, prepare=prepare, on_step=on_step))
    except NoPayoff as exc:
        relabel(exc.result)  # type: ignore[attr-defined]
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
