"""``sequence``: several ops in order, and ``keep``: the replaced layer itself inside a sequence.

The paper's EffBottleneck (R50-hybrid's stride-2 blocks) is ``[avg_pool 2x2/2, keep at stride 1]``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Literal

from pydantic import Field, model_validator
from torch import nn

from ._registry import BuildContext, OpSpec, register_op
from .pool import Inherit, pick

__all__ = ["SequenceSpec", "KeepSpec"]


class KeepSpec(OpSpec):
    """Inside a `sequence`: the original layer (weights included), optionally at another stride (static padding
    suits any stride; TF-'same' padding adapts at run time)."""

    op: Literal["keep"]
    stride: int | Inherit = Field("inherit", description="the kept layer's stride; `inherit`: its own")

    def keeps_layer(self) -> bool:
        return True


class SequenceSpec(OpSpec):
    """Several steps in order, e.g. `avg_pool 2x2/2` then the kept conv at stride 1 (the paper's EffBottleneck)."""

    op: Literal["sequence"]
    # StepSpec, the union of the ops that may be steps, is set by pfconvert.rules.schema once every op is registered
    steps: Annotated[list["StepSpec"], Field(min_length=1, description="the ops, in order")]  # noqa: F821

    @model_validator(mode="after")
    def _one_keep(self) -> "SequenceSpec":
        if sum(step.keeps_layer() for step in self.steps) > 1:
            raise ValueError("a sequence may keep the original layer at most once")
        return self

    def aliases_input(self) -> bool:
        return all(step.aliases_input() for step in self.steps)

    def keeps_layer(self) -> bool:
        return any(step.keeps_layer() for step in self.steps)


@register_op(KeepSpec, top_level=False)
def build_keep(spec: KeepSpec, ctx: BuildContext) -> nn.Module:
    """A copy of the replaced layer at the asked stride."""
    assert ctx.geometry is not None
    kept = copy.deepcopy(ctx.module)
    kept.stride = pick(spec.stride, ctx.geometry.stride)
    return kept


@register_op(SequenceSpec, in_sequence=False)
def build_sequence(spec: SequenceSpec, ctx: BuildContext) -> nn.Module:
    """Each step built for the same layer, in order."""
    return nn.Sequential(*[ctx.build(step) for step in spec.steps])
