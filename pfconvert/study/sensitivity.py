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

import torch
import yaml
from torch import nn

from .._deprecated import renamed_kwargs
from ..conversion.rewrite import apply_matches, match_rules
from ..data.config import DataConfig
from ..data.loaders import eval_loader
from ..errors import DataError, RuleError
from ..graph.match import Match
from ..report.report import median
from ..rules.loading import LoadedRules, parse_rules
from .groups import Group, LayerGroup, StageGroup

__all__ = ["GroupResult", "SensitivityResult", "group_matches", "stage_groups", "run_sensitivity",
           "sensitivity_on_data", "selected_rules", "ValidationTools", "validation_tools"]


@dataclass
class GroupResult:
    """One converted group: its layers, accuracy after conversion, drop vs. the original, latency ratio."""

    group: Group  # a stage (StageGroup: 'stage 2', 'other') or a layer (LayerGroup), by the study's ``by``
    layers: list[str]
    rules: list[str]  # the rule that matched each layer
    top1: float
    drop: float
    latency_ms: float | None  # None: not timed (the planner times whole candidates instead)
    latency_ratio: float | None  # converted / original: below 1.0 is faster
    params_removed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the group as its label)."""
        data = asdict(self)
        data["group"] = self.group.to_json()
        return data


@dataclass
class SensitivityResult:
    """The original's accuracy and latency, and one result per group ranked by accuracy drop (smallest first)."""

    base_top1: float
    base_latency_ms: float
    groups: list[GroupResult] = field(default_factory=list)
    deploy_method: str = ""
    """How the latencies were measured (the deploy method actually used, after any fallback)."""

    def ranked(self) -> list[GroupResult]:
        """Groups from the least to the most harmful (ties broken by latency gain)."""
        return sorted(self.groups, key=lambda g: (g.drop, g.latency_ratio or 0.0))

    def worth_converting(self, max_drop: float) -> list[GroupResult]:
        """Groups whose accuracy drop is at most ``max_drop`` points."""
        return [g for g in self.ranked() if g.drop <= max_drop]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"base_top1": self.base_top1, "base_latency_ms": self.base_latency_ms,
                "deploy_method": self.deploy_method, "groups": [g.to_dict() for g in self.ranked()]}


def stage_groups(matches: list[Match]) -> dict[StageGroup, list[Match]]:
    """Matches by stage (as parsed from module paths; unstaged layers form 'other'), in the order first matched."""
    groups: dict[StageGroup, list[Match]] = {}
    for match in matches:
        groups.setdefault(StageGroup(match.site.stage), []).append(match)
    return groups


def group_matches(matches: list[Match], by: str = "stage") -> dict[Group, list[Match]]:
    """Group matches by ``stage`` (:func:`stage_groups`) or by ``layer`` (one group per layer)."""
    if by not in ("stage", "layer"):
        raise RuleError(f"--by must be stage or layer, not {by!r}")
    if by == "stage":
        return dict(stage_groups(matches))
    groups: dict[Group, list[Match]] = {}
    for match in matches:
        groups.setdefault(LayerGroup(match.site.path), []).append(match)
    return groups


def run_sensitivity(
    model: nn.Module,
    rules: LoadedRules,
    input_size: tuple[int, int, int],
    evaluate: Callable[[nn.Module], float],
    latency_ms: Callable[[nn.Module, nn.Module], tuple[float, float]] | None,
    by: str = "stage",
    prepare: Callable[[nn.Module], None] | None = None,
    on_group: Callable[[str, int, int], None] | None = None,
    base_top1: float | None = None,
) -> SensitivityResult:
    """Convert each group alone (on a copy of ``model``) and measure it.

    Args:
        model: the original model (not modified).
        rules: the rules whose matches are studied.
        input_size: (C, H, W) of the traced forward.
        evaluate: top-1 accuracy (percent) of a model.
        latency_ms: ``(original, variant) -> (original ms, variant ms)``, both measured in the same run so that the
            ratio is not skewed by drift between runs; None: accuracy only (:func:`pfconvert.study.plan_conversion`
            ranks stages this way, then times whole candidates).
        by: ``stage`` or ``layer``.
        prepare: called on each converted copy before evaluation (e.g. BatchNorm re-estimation).
        on_group: progress callback (group name, index, total); index -1 first, for the original model.
        base_top1: the original's top-1 when already known (else it is evaluated).
    """
    matches, flow = match_rules(model, rules, input_size)
    if not matches:
        raise RuleError(f"rule '{rules.name}' matched no layer; nothing to study")
    groups = group_matches(matches, by)
    if on_group is not None:
        on_group("original", -1, len(groups))
    result = SensitivityResult(base_top1=evaluate(model) if base_top1 is None else base_top1, base_latency_ms=0.0)
    base_times = []
    for index, (group, members) in enumerate(groups.items()):
        if on_group is not None:
            on_group(group.label, index, len(groups))
        variant = copy.deepcopy(model)
        done = apply_matches(variant, members, flow)
        if prepare is not None:
            prepare(variant)
        top1 = evaluate(variant)
        base_ms, ms = latency_ms(model, variant) if latency_ms is not None else (None, None)
        if base_ms is not None:
            base_times.append(base_ms)
        result.groups.append(GroupResult(group, [m.site.path for m in members], [m.rule.name for m in members], top1,
                                         result.base_top1 - top1, ms, ms / base_ms if ms is not None else None,
                                         sum(r.params_removed for r in done)))
    result.base_latency_ms = median(base_times) if base_times else 0.0
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



def sensitivity_on_data(model: nn.Module, rules: LoadedRules, data: str, *, data_cfg: DataConfig | None = None,
                        img_size: int | None = None, by: str = "stage", limit_val: int | None = 2000,
                        bn_recalib_images: int = 512, val_split: float = 0.1, batch_size: int = 64,
                        deploy_method: str = "auto", on_group: Callable[[str, int, int], None] | None = None,
                        notes: list[str] | None = None) -> SensitivityResult:
    """:func:`run_sensitivity` on real data: top-1 on (a fixed subset of) the validation split (carved from the
    training images, never the test split: the choice this study makes is model selection), BatchNorm re-estimated
    on other training images for each variant, latency at batch 1 through the report's deployed CPU path.

    Args:
        model: the original model with its trained weights (not modified).
        rules: the rules whose matches are studied.
        data: ``fashion-mnist``, an IDX directory, an image folder, a .tar or ``hfds/NAME``.
        data_cfg: how images become the model's input (default: timm's config of ``model``).
        img_size: input height and width instead of the data config's.
        by: group by ``stage`` or ``layer``.
        limit_val: evaluate on a fixed random subset of this many validation images (None: all).
        bn_recalib_images: training images for BatchNorm re-estimation of each variant (0: off).
        val_split: the share of the training images carved out for validation (when there is no val/ folder).
        batch_size: evaluation batch size.
        deploy_method: how the latency is measured (:func:`pfconvert.deploy.optimize_for_cpu`).
        on_group: progress callback (group name, index, total).
        notes: when given, lines saying which data and input were used are appended to it.

    Raises:
        DataError: bad limits, or the data's classes differ from the model's.
    """
    from ..report.latency import LatencyConfig, measure
    from ..report.report import median_ms

    tools = validation_tools(model, data, data_cfg=data_cfg, img_size=img_size, limit_val=limit_val,
                             bn_recalib_images=bn_recalib_images, val_split=val_split, batch_size=batch_size,
                             notes=notes)
    size = tools.input_size
    methods: list[str] = []

    def latency(base: nn.Module, variant: nn.Module) -> tuple[float, float]:
        cfg = LatencyConfig(batch_sizes=(1,), input_size=size, runs=15, warmup=3, max_seconds=5,
                            deploy_method=deploy_method)
        timings = measure({"original": base, "variant": variant}, ["cpu"], cfg)
        methods.append(timings.methods.get(("cpu", 1), deploy_method))
        times = timings[("cpu", 1)]
        return median_ms(times["original"]), median_ms(times["variant"])

    result = run_sensitivity(model.eval(), rules, size, tools.top1, latency, by=by, prepare=tools.recalibrate,
                             on_group=on_group)
    result.deploy_method = ", ".join(dict.fromkeys(methods))
    return result


@dataclass
class ValidationTools:
    """What a study needs of the data: the input size, top-1 on the validation images, and calibration on other
    training images (BatchNorm re-estimation; the images themselves, for a reconstruction)."""

    input_size: tuple[int, int, int]
    top1: Callable[[nn.Module], float]
    recalibrate: Callable[[nn.Module], None]
    calib_batches: Callable[[int], list[torch.Tensor]]


@renamed_kwargs(calib_images="bn_recalib_images")
def validation_tools(model: nn.Module, data: str, *, data_cfg: DataConfig | None = None, img_size: int | None = None,
                     limit_val: int | None = 2000, bn_recalib_images: int = 512, val_split: float = 0.1,
                     batch_size: int = 64, notes: list[str] | None = None) -> ValidationTools:
    """Open the validation split (carved from the training images, never the test split: a study's choices are model
    selection) and ``bn_recalib_images`` other training images, prepared as ``model``'s input.

    Raises:
        DataError: bad limits, or the data's classes differ from the model's.
    """
    from ..data.config import resolve_data_config
    from ..data.datasets import open_split, resolve_source
    from ..data.transforms import build_transforms
    from ..recover.bn import recalibrate_batchnorm
    from ..recover.metrics import evaluate, infer_num_classes
    from ..recover.precision import resolve_precision

    if limit_val is not None and limit_val < 1:
        raise DataError(f"limit_val must be at least 1 image (or None for all), got {limit_val}")
    if bn_recalib_images < 0:
        raise DataError(f"bn_recalib_images must be 0 (off) or more, got {bn_recalib_images}")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if img_size is not None and img_size < 8:
        raise DataError(f"img_size must be at least 8 pixels, got {img_size}")
    data_cfg = data_cfg if data_cfg is not None else resolve_data_config(model)
    if img_size is not None:
        data_cfg = data_cfg.with_size(img_size)
    source = resolve_source(data)
    val = open_split(source, "val", limit_val, val_fraction=val_split)
    size: tuple[int, int, int] = data_cfg.input_size
    logits = infer_num_classes(model, size)
    if len(val.classes) != logits:
        raise DataError(f"the model has {logits} classes but {data} has {len(val.classes)}; pass --num-classes "
                        f"{len(val.classes)} (and the --checkpoint trained on this data)")
    data_cfg, note = data_cfg.for_images(val.image_size())
    _, eval_tf = build_transforms(data_cfg, "none")
    mode = data_cfg.image_mode
    val.mode, val.transform = mode, eval_tf
    calib = open_split(source, "train", bn_recalib_images or None, seed=1, val_fraction=val_split)
    calib.mode, calib.transform = mode, eval_tf
    if notes is not None:
        notes += [f"data: {val.description}: {len(val)} images; BatchNorm re-estimated on {len(calib)} other "
                  "training images" if bn_recalib_images else f"data: {val.description}: {len(val)} images",
                  f"input: {data_cfg.describe()}", *([note] if note else [])]
    precision = resolve_precision(torch.device("cpu"))
    loader = eval_loader(val, batch_size)

    def top1(m: nn.Module) -> float:
        return evaluate(m, loader, precision).top1

    def recalibrate(m: nn.Module) -> None:
        if bn_recalib_images > 0:
            recalibrate_batchnorm(m, eval_loader(calib, batch_size), precision, len(calib))

    def calib_batches(n: int) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for x, _ in eval_loader(calib, batch_size):
            out.append(x[: n - sum(len(b) for b in out)])
            if sum(len(b) for b in out) >= n:
                break
        return out

    return ValidationTools(size, top1, recalibrate, calib_batches)
