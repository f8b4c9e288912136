"""The rule language: pydantic models that validate a rule file.

A rule file is a YAML mapping::

    name: maxpool
    description: Every depthwise conv (with its BN/act) -> max-pool of the same size, stride kept.
    rules:
      - name: dw-to-maxpool
        match: {op: conv2d, depthwise: true}
        replace: {op: max_pool}
        absorb: [norm, act]

Rules apply in order and the first rule that matches a layer wins. ``match`` says which layers a rule targets (its
fields are the registered predicates: :mod:`pfconvert.rules.predicates`),
``replace`` what is put there (one of the registered ops: :mod:`pfconvert.ops`; the ``replace`` union below is built
from the registry), and ``absorb`` which layers that directly follow the matched one (its norm, then its activation)
are removed with it. Unknown keys are errors. ``docs/rule-language.md`` is generated from these models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from ..ops._registry import get_op, list_ops
from ..ops.sequence import SequenceSpec
from .predicates._registry import list_predicates, predicate_fields, takes_list

if TYPE_CHECKING:
    from ..graph.match import Layout, Match, Site

__all__ = ["MatchSpec", "MatchBase", "ReplaceSpec", "StepSpec", "Rule", "PruneSpec", "RuleSet"]

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchBase(_Strict):
    """The behaviour of :class:`MatchSpec`, whose fields come from the predicate registry."""

    @model_validator(mode="before")
    @classmethod
    def _scalars_as_lists(cls, data: Any) -> Any:
        """Let a scalar stand for a one-element list (``kernel_size: 3`` == ``kernel_size: [3]``)."""
        if not isinstance(data, dict):
            return data
        lists = _list_fields()
        return {k: [v] if k in lists and v is not None and not isinstance(v, list) else v for k, v in data.items()}

    def holds(self, site: Site, layout: Layout) -> bool:
        """Whether every predicate this spec gives holds for ``site`` (called by the matcher for each site)."""
        return all(pred.holds(getattr(self, pred.name), site, layout) for pred in list_predicates()
                   if pred.check is not None and getattr(self, pred.name) is not None)

    def select(self, matches: Sequence[Match]) -> list[Match]:
        """This rule's matches (in forward order) thinned by the selections it gives (``every_nth``)."""
        kept = list(matches)
        for pred in list_predicates():
            if pred.select is not None and getattr(self, pred.name) is not None:
                kept = pred.select(self, kept)
        return kept


@functools.cache
def _list_fields() -> frozenset[str]:
    return frozenset(name for name, (annotation, _) in predicate_fields().items() if takes_list(annotation))


MatchSpec = create_model("MatchSpec", __base__=MatchBase, __module__=__name__,  # type: ignore[call-overload]
                         **predicate_fields())
MatchSpec.__doc__ = """What a rule targets. Every field is optional; all given fields must hold. The fields are the
registered predicates (:mod:`pfconvert.rules.predicates`), one module each."""


def _union(specs: tuple[type, ...]) -> object:
    return Annotated[Union[specs], Field(discriminator="op")]  # type: ignore[valid-type]


StepSpec = _union(tuple(op.spec for op in list_ops() if op.in_sequence))
"""Any op that may be a step of ``op: sequence``."""
ReplaceSpec = _union(tuple(op.spec for op in list_ops() if op.top_level))
"""Any op that may be a rule's whole replacement."""
SequenceSpec.model_rebuild(_types_namespace={"StepSpec": StepSpec})


class Rule(_Strict):
    """One match -> replace rule."""

    name: str = Field(min_length=1, description="unique within the file; reports and artifacts name it")
    description: str = Field("", description="free text")
    match: MatchSpec = Field(description="which layers the rule targets")
    replace: ReplaceSpec = Field(description="what each matched layer becomes: an op and its fields")  # type: ignore
    absorb: list[Literal["norm", "act"]] = Field(default_factory=list, description="layers that directly follow the "
                                                 "matched one and are removed with it: its norm, then its activation")
    allow_empty_branch: bool = Field(False, description="let the rule leave a residual branch with no trainable layer "
                                     "(conv, linear): refused otherwise, since such a branch no longer learns")

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        if "act" in self.absorb and "norm" not in self.absorb:
            raise ValueError("absorb: 'act' needs 'norm' too (the activation is the one that follows the norm)")
        op = get_op(self.replace.op)  # type: ignore[attr-defined]
        if self.match.op not in op.sites:
            fits = [o.name for o in list_ops() if o.top_level and self.match.op in o.sites]
            raise ValueError(f"replace op {op.name!r} replaces {'/'.join(sorted(op.sites))} layers, not "
                             f"{self.match.op}; for match op {self.match.op!r} use one of {', '.join(fits)}")
        if self.match.op != "conv2d" and self.absorb:
            raise ValueError(f"absorb is not used with match op {self.match.op!r}")
        return self


class PruneSpec(_Strict):
    """Channel pruning after the rules (Torch-Pruning's magnitude pruner; needs `pfconvert[prune]`)."""

    ratio: float = Field(gt=0.0, lt=1.0, description="the share of output channels pruned from every layer but the "
                         "classifier (coupled channels pruned together); with `global_pruning`, of all their channels")
    round_to: int = Field(8, ge=1, description="channel counts are kept multiples of this (what CPU kernels run "
                          "fastest at)")
    importance: Literal["l1", "group-norm"] = Field("l1", description="which channels go: `l1`, the smallest L1 "
                                                    "norm of a channel's weights; `group-norm`, the smallest L2 norm "
                                                    "over every layer the channel couples (Torch-Pruning's group "
                                                    "norm)")
    global_pruning: bool = Field(False, description="rank the channels of all layers together (one global ratio: "
                                 "layers that matter less lose more) instead of the same ratio in every layer")
    max_ratio: float | None = Field(None, gt=0.0, lt=1.0, description="with `global_pruning`: no layer loses more "
                                    "than this share of its channels (default 0.8, at least `ratio`)")

    @model_validator(mode="after")
    def _cap(self) -> "PruneSpec":
        if self.max_ratio is not None and not self.global_pruning:
            raise ValueError("max_ratio caps global pruning only; set global_pruning: true or drop max_ratio")
        if self.max_ratio is not None and self.max_ratio < self.ratio:
            raise ValueError(f"max_ratio {self.max_ratio:g} is below ratio {self.ratio:g}")
        return self


class RuleSet(_Strict):
    """A rule file: a name, a description and an ordered list of rules (first match wins)."""

    name: str = Field(min_length=1, description="the rule set's name (artifacts and tables show it)")
    description: str = Field("", description="what the rules do, for `pfconvert rules`")
    prune: PruneSpec | None = Field(None, description="channel pruning applied after the rules (`pfconvert plan "
                                    "--prune` writes it); the artifact records the pruned channel counts")
    rules: Annotated[list[Rule], Field(description="the rules, in order; the first that matches a layer wins (may "
                                       "be empty only with `prune`)")]

    @field_validator("rules")
    @classmethod
    def _some_rule(cls, rules: list[Rule], info: object) -> list[Rule]:
        if not rules and getattr(info, "data", {}).get("prune") is None:
            raise ValueError("a rule file needs one rule at least (or a prune: section)")
        return rules

    @model_validator(mode="after")
    def _unique_names(self) -> "RuleSet":
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dup)}")
        return self
