"""The rule language: pydantic models that validate a rule file (no torch here).

A rule file is a YAML mapping::

    name: maxpool
    description: Every depthwise conv (with its BN/act) -> max-pool of the same size, stride kept.
    rules:
      - name: dw-to-maxpool
        match: {op: conv2d, depthwise: true}
        replace: {op: max_pool}
        absorb: [norm, act]

Rules apply in order and the first rule that matches a layer wins. ``match`` says which layers a rule targets,
``replace`` what is put there, and ``absorb`` which layers that directly follow the matched one (its norm, then its
activation) are removed with it. Unknown keys are errors.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "OP_NAMES",
    "MatchSpec",
    "PoolSpec",
    "IdentitySpec",
    "ShiftSpec",
    "KeepSpec",
    "SequenceSpec",
    "TokenMixerSpec",
    "ReplaceSpec",
    "Rule",
    "RuleSet",
]

Inherit = Literal["inherit"]
IntList = Annotated[list[int], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: object) -> object:
    """Let a scalar stand for a one-element list (``kernel_size: 3`` == ``kernel_size: [3]``)."""
    if value is None or isinstance(value, list):
        return value
    return [value]


class MatchSpec(_Strict):
    """What a rule targets. Every field is optional; all given fields must hold.

    Attributes:
        op: Layer kind: ``conv2d`` (any ``nn.Conv2d`` subclass, incl. timm's Conv2dSame/StdConv2d, and CondConv2d)
            or ``attention`` (timm ``Attention`` token mixers of ViT-style blocks).
        depthwise: True: ``groups == in_channels`` (and out a multiple of in); False: ``groups == 1``.
        kernel_size: Allowed square kernel sizes.
        stride: Allowed strides.
        dilation: Allowed dilations.
        same_channels: Require ``in_channels == out_channels``.
        path: fnmatch glob(s) on the qualified module name (``layer*.conv2``); any may match.
        path_regex: A regular expression searched in the qualified name.
        exclude: fnmatch glob(s) of qualified names never matched.
        parent: fnmatch glob(s) on the class name of the parent module (``Bottleneck``).
        stages: 0-based stage indices (``layer1`` -> 0, ``stages.0``/``blocks.0`` -> 0); see ``pfconvert.match``.
        blocks: 0-based block indices within a stage (negative counts from the end).
        every_nth: Keep every n-th match of this rule (in forward order), starting at ``offset``.
        offset: First match index kept by ``every_nth``.
    """

    op: Literal["conv2d", "attention"] = "conv2d"
    depthwise: bool | None = None
    kernel_size: IntList | None = None
    stride: IntList | None = None
    dilation: IntList | None = None
    same_channels: bool | None = None
    path: list[str] | None = None
    path_regex: str | None = None
    exclude: list[str] | None = None
    parent: list[str] | None = None
    stages: list[int] | None = None
    blocks: list[int] | None = None
    every_nth: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0)

    _lists = field_validator("kernel_size", "stride", "dilation", "path", "exclude", "parent", "stages", "blocks",
                             mode="before")(_as_list)

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
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


class PoolSpec(_Strict):
    """A max- or average-pool. ``inherit`` takes the value from the replaced layer.

    ``padding: inherit`` keeps the layer's geometry: static padding is copied, TF-'same' (dynamic, asymmetric) padding
    becomes a 'same' pool. Max-pool pads with -inf; avg-pool excludes padding from the mean unless ``count_include_pad``.
    """

    op: Literal["max_pool", "avg_pool"]
    kernel_size: int | Inherit = "inherit"
    stride: int | Inherit = "inherit"
    padding: int | Inherit = "inherit"
    count_include_pad: bool = False

    @field_validator("kernel_size", "stride")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'inherit'")
        return value

    @field_validator("padding")
    @classmethod
    def _non_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be a non-negative integer or 'inherit'")
        return value


class IdentitySpec(_Strict):
    """Pass the input through; a strided layer becomes a strided subsample (``x[..., ::s, ::s]``)."""

    op: Literal["identity"]


class ShiftSpec(_Strict):
    """Shift (Wu et al. 2018): channel groups move one pixel in each of 8 directions (zeros fill), stride kept."""

    op: Literal["shift"]
    groups: int = Field(default=9, ge=1)


class KeepSpec(_Strict):
    """Inside a ``sequence``: the original layer, optionally at another stride (its padding is adjusted)."""

    op: Literal["keep"]
    stride: int | Inherit = "inherit"


class TokenMixerSpec(_Strict):
    """For ``op: attention``: the paper's efficient token mixer or a PoolFormer-style parameter-free mixer.

    ``eff_max`` is Linear(d->expand*d), GELU, 3x3 max-pool over the token grid, GELU, Linear(expand*d->d).
    ``pool`` is PoolFormer's ``avg_pool(x) - x`` over the token grid (no parameters).
    Prefix (class/register) tokens pass through unchanged.
    """

    op: Literal["eff_max", "pool"]
    expand: int = Field(default=3, ge=1)
    kernel_size: int = Field(default=3, ge=1)


StepSpec = Annotated[Union[PoolSpec, IdentitySpec, ShiftSpec, KeepSpec], Field(discriminator="op")]


class SequenceSpec(_Strict):
    """Several steps in order, e.g. ``avg_pool 2x2/2`` then the kept conv at stride 1 (the paper's EffBottleneck)."""

    op: Literal["sequence"]
    steps: Annotated[list[StepSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_keep(self) -> "SequenceSpec":
        if sum(isinstance(s, KeepSpec) for s in self.steps) > 1:
            raise ValueError("a sequence may keep the original layer at most once")
        return self


ReplaceSpec = Annotated[
    Union[PoolSpec, IdentitySpec, ShiftSpec, SequenceSpec, TokenMixerSpec], Field(discriminator="op")
]

OP_NAMES: tuple[str, ...] = ("max_pool", "avg_pool", "identity", "shift", "sequence", "eff_max", "pool")


class Rule(_Strict):
    """One match -> replace rule."""

    name: str = Field(min_length=1)
    description: str = ""
    match: MatchSpec
    replace: ReplaceSpec
    absorb: list[Literal["norm", "act"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        if "act" in self.absorb and "norm" not in self.absorb:
            raise ValueError("absorb: 'act' needs 'norm' too (the activation is the one that follows the norm)")
        mixer = isinstance(self.replace, TokenMixerSpec)
        if mixer != (self.match.op == "attention"):
            raise ValueError("replace ops eff_max/pool go with match op 'attention', and only they do")
        if self.match.op == "attention" and self.absorb:
            raise ValueError("absorb is not used with match op 'attention'")
        return self


class RuleSet(_Strict):
    """A rule file: a name, a description and an ordered list of rules (first match wins)."""

    name: str = Field(min_length=1)
    description: str = ""
    rules: Annotated[list[Rule], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> "RuleSet":
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dup)}")
        return self
