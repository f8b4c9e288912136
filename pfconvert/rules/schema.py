"""The rule language: pydantic models that validate a rule file.

A rule file is a YAML mapping::

    name: maxpool
    description: Every depthwise conv (with its BN/act) -> max-pool of the same size, stride kept.
    rules:
      - name: dw-to-maxpool
        match: {op: conv2d, depthwise: true}
        replace: {op: max_pool}
        absorb: [norm, act]

Rules apply in order and the first rule that matches a layer wins. ``match`` says which layers a rule targets,
``replace`` what is put there (one of the registered ops: :mod:`pfconvert.ops`; the ``replace`` union below is built
from the registry), and ``absorb`` which layers that directly follow the matched one (its norm, then its activation)
are removed with it. Unknown keys are errors. ``docs/rule-language.md`` is generated from these models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..ops._registry import SITE_KINDS, get_op, list_ops
from ..ops.sequence import SequenceSpec

__all__ = ["MatchSpec", "ReplaceSpec", "StepSpec", "Rule", "PruneSpec", "RuleSet"]

IntList = Annotated[list[int], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: object) -> object:
    """Let a scalar stand for a one-element list (``kernel_size: 3`` == ``kernel_size: [3]``)."""
    if value is None or isinstance(value, list):
        return value
    return [value]


class MatchSpec(_Strict):
    """What a rule targets. Every field is optional; all given fields must hold."""

    op: Literal[SITE_KINDS] = Field(  # type: ignore[valid-type]
        "conv2d", description="layer kind: `conv2d` (any `nn.Conv2d` subclass, incl. timm's Conv2dSame/StdConv2d, and "
        "CondConv2d) or `attention` (timm `Attention` token mixers of ViT-style blocks)")
    depthwise: bool | None = Field(None, description="true: `groups == in_channels` (and out a multiple of in); "
                                   "false: `groups == 1`")
    groups: list[Literal["dense", "grouped", "depthwise", "any"]] | None = Field(
        None, description="filter grouping, one or a list: `dense` (`groups == 1`), `grouped` (1 < groups, not "
        "depthwise: ResNeXt, RegNet), `depthwise` (as `depthwise: true`) or `any`")
    kernel_size: IntList | None = Field(None, description="allowed square kernel sizes")
    stride: IntList | None = Field(None, description="allowed strides")
    dilation: IntList | None = Field(None, description="allowed dilations")
    same_channels: bool | None = Field(None, description="require `in_channels == out_channels`")
    residual: bool | None = Field(None, description="true: the layer lies in a residual branch (between a fork and "
                                  "the addition that joins it, in the traced dataflow); false: it does not")
    branch_role: list[Literal["spatial", "first", "last", "only"]] | None = Field(
        None, description="the conv's role in the smallest residual branch holding it, one or a list: `spatial` (the "
        "branch also holds a pointwise conv on its feature map, before or after it: a bottleneck's or DarkNet block's "
        "3x3, an inverted residual's depthwise conv), `first` / `last` (first / last of two or more k x k convs: a BasicBlock's conv1 / conv2), "
        "`only` (the branch's single k x k conv)")
    path: list[str] | None = Field(None, description="fnmatch globs on the qualified module name (`layer*.conv2`); "
                                   "any may match")
    path_regex: str | None = Field(None, description="a regular expression searched in the qualified name")
    exclude: list[str] | None = Field(None, description="fnmatch globs of qualified names never matched")
    parent: list[str] | None = Field(None, description="fnmatch globs on the class name of the parent module "
                                     "(`Bottleneck`)")
    stages: list[int] | None = Field(None, description="0-based stage indices (`layer1` -> 0, `stages.0` / "
                                     "`blocks.0` -> 0)")
    blocks: list[int] | None = Field(None, description="0-based block indices within a stage (negative counts from "
                                     "the end)")
    every_nth: int | None = Field(None, ge=1, description="keep every n-th match of this rule (in forward order), "
                                  "starting at `offset`")
    offset: int = Field(0, ge=0, description="first match index kept by `every_nth`")

    _lists = field_validator("groups", "branch_role", "kernel_size", "stride", "dilation", "path", "exclude", "parent",
                             "stages", "blocks", mode="before")(_as_list)

    @field_validator("kernel_size", "stride", "dilation")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v < 1 for v in values):
            raise ValueError("must be positive integers")
        return values

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


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
                         "classifier (coupled channels pruned together)")
    round_to: int = Field(8, ge=1, description="channel counts are kept multiples of this (what CPU kernels run "
                          "fastest at)")


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
