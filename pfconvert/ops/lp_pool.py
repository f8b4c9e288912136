"""``lp_pool``: power-average pooling, ``(sum of x^p over the window)^(1/p)``; p = 1 is sum pooling, large p
approaches max pooling. The worked example of ``docs/extending.md``: a whole op in one module."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..graph.geometry import is_dynamic_same
from ._registry import BuildContext, Count, OpSpec, register_op
from .pool import Inherit, pick, static_pads

__all__ = ["LpPoolSpec", "LpPool2d"]


class LpPoolSpec(OpSpec):
    """Power-average pool (Boureau et al. 2010): `(sum x^p)^(1/p)` over the replaced layer's window, zero padding
    adding nothing to the sum; p = 1 sums, a large p approaches max-pool."""

    op: Literal["lp_pool"]
    p: float = Field(2.0, ge=1.0, le=16.0, description="the power p")
    kernel_size: int | Inherit = Field("inherit", description="window size; `inherit`: the replaced layer's kernel")
    stride: int | Inherit = Field("inherit", description="stride; `inherit`: the replaced layer's")


class LpPool2d(nn.Module):
    """``F.lp_pool2d`` after zero padding (which ``nn.LPPool2d`` lacks); (left, right, top, bottom) ``pads``."""

    def __init__(self, p: float, kernel: tuple[int, int], stride: tuple[int, int],
                 pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.p, self.kernel, self.stride, self.pads = p, kernel, stride, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return F.lp_pool2d(x, self.p, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"p={self.p:g}, kernel={self.kernel}, stride={self.stride}, pads={self.pads}"


@register_op(LpPoolSpec, counts={"aten::avg_pool2d": Count.POOL_WINDOW})
def build_lp_pool(spec: LpPoolSpec, ctx: BuildContext) -> nn.Module:
    """An :class:`LpPool2d` with the layer's window, stride and padding."""
    geo = ctx.geometry
    assert geo is not None
    if geo.dilation != (1, 1):
        raise ctx.error("lp_pool has no dilation; exclude dilated layers (match.dilation: 1)")
    if is_dynamic_same(ctx.module):
        raise ctx.error("lp_pool cannot follow TF-'same' padding; use max_pool or avg_pool for this layer")
    kernel, stride = pick(spec.kernel_size, geo.kernel), pick(spec.stride, geo.stride)
    pads = static_pads(ctx.module, geo.kernel, geo.dilation)
    if spec.kernel_size != "inherit":  # a window of another size keeps the output size with half its extent
        pads = (kernel[1] // 2, kernel[1] // 2, kernel[0] // 2, kernel[0] // 2)
    return LpPool2d(spec.p, kernel, stride, pads)
