"""``identity``: the layer removed; a strided layer becomes a strided subsample at its window centres."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..graph.geometry import is_dynamic_same
from ._registry import BuildContext, OpSpec, register_op
from .pool import static_pads

__all__ = ["IdentitySpec", "Subsample", "identity_for", "require_square"]


class IdentitySpec(OpSpec):
    """Pass the input through; a strided layer becomes a strided subsample (`x[..., ::s, ::s]`): the speed ceiling of
    parameter-free replacements."""

    op: Literal["identity"]


def _same_offset(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Index of the first window centre under TF-'same' padding for an input of ``size``."""
    pad = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return (kernel - 1) * dilation // 2 - pad // 2


class Subsample(nn.Module):
    """Strided identity: picks the pixels at the window centres of a strided conv (``x[..., o::s, o::s]``)."""

    def __init__(self, stride: int, offset: int = 0, same: tuple[int, int] | None = None) -> None:
        """``same`` = (kernel, dilation) computes the offset per input size as TF-'same' padding would."""
        super().__init__()
        self.stride, self.offset, self.same = stride, offset, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same is None:
            return x[:, :, self.offset::self.stride, self.offset::self.stride]
        k, d = self.same
        oh = _same_offset(x.shape[-2], k, self.stride, d)
        ow = _same_offset(x.shape[-1], k, self.stride, d)
        return x[:, :, oh::self.stride, ow::self.stride]

    def extra_repr(self) -> str:
        return f"stride={self.stride}, offset={'same' if self.same else self.offset}"


def require_square(ctx: BuildContext, what: str) -> None:
    """Refuse a layer with a rectangular kernel or stride for an op that needs a square one."""
    geo = ctx.geometry
    assert geo is not None
    if not geo.square:
        raise ctx.error(f"non-square kernel/stride {geo.kernel}/{geo.stride}, and {what} needs a square one; exclude "
                        "the layer from the rule (match.exclude) or use a pool")


def identity_for(ctx: BuildContext) -> nn.Module:
    """``nn.Identity`` for a stride-1 layer, else the :class:`Subsample` at the layer's window centres."""
    geo = ctx.geometry
    assert geo is not None
    if geo.stride == (1, 1):
        return nn.Identity()
    require_square(ctx, "a strided identity")
    s, k, d = geo.stride[0], geo.kernel[0], geo.dilation[0]
    if is_dynamic_same(ctx.module):
        return Subsample(s, same=(k, d))
    left, _, top, _ = static_pads(ctx.module, geo.kernel, geo.dilation)
    if left != top:
        raise ctx.error(f"padding {(top, left)} differs per axis; a strided identity needs the same padding on both "
                        "axes")
    return Subsample(s, offset=(k - 1) * d // 2 - top)


@register_op(IdentitySpec, passes_input=True)
def build_identity(spec: IdentitySpec, ctx: BuildContext) -> nn.Module:
    """The layer removed (see the module docstring)."""
    return identity_for(ctx)
