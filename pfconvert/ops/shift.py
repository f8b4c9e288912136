"""``shift`` (Wu et al. 2018): channel groups move one pixel in each of 8 directions, zeros fill."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ._registry import BuildContext, Count, OpSpec, register_op
from .identity import identity_for, require_square

__all__ = ["ShiftSpec", "Shift"]


class ShiftSpec(OpSpec):
    """Shift (Wu et al. 2018): channel groups move one pixel in each of 8 directions (one group stays, zeros fill);
    a strided layer is subsampled after the shift. Replaces 3x3 undilated layers only."""

    op: Literal["shift"]
    groups: int = Field(9, ge=1, le=9, description="channel groups: one stays, the others move one pixel in 8 "
                        "directions (at most 9)")


class Shift(nn.Module):
    """Shift (Wu et al. 2018): channel groups move one pixel in 8 directions (one group stays), zeros fill."""

    _DIRS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))

    def __init__(self, channels: int, groups: int = 9) -> None:
        super().__init__()
        self.channels, self.groups = channels, min(groups, len(self._DIRS), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = F.pad(x, (1, 1, 1, 1))
        bounds = [round(i * self.channels / self.groups) for i in range(self.groups + 1)]
        parts = [xp[:, a:b, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                 for (a, b), (dy, dx) in zip(zip(bounds, bounds[1:]), self._DIRS)]
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


@register_op(ShiftSpec, counts={"aten::constant_pad_nd": Count.FREE, "aten::cat": Count.FREE})
def build_shift(spec: ShiftSpec, ctx: BuildContext) -> nn.Module:
    """A Shift of the layer's channels, then the layer's stride as a subsample."""
    geo = ctx.geometry
    assert geo is not None
    if geo.kernel != (3, 3) or geo.dilation != (1, 1):
        raise ctx.error("shift replaces 3x3 undilated layers only; restrict the rule with match.kernel_size: 3")
    require_square(ctx, "shift")
    shift: nn.Module = Shift(geo.in_channels, spec.groups)
    return nn.Sequential(shift, identity_for(ctx)) if geo.stride[0] > 1 else shift
