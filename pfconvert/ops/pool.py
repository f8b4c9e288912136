"""``max_pool`` and ``avg_pool``: a pool with the replaced layer's geometry, unless the rule sets it.

Kernel, stride, padding and dilation are inherited per axis (a 1x5 conv becomes a 1x5 pool). TF-'same' convs (timm
``Conv2dSame``: dynamic, asymmetric padding) get 'same' pools (timm ``MaxPool2dSame`` pads with -inf); padding that
``nn.MaxPool2d`` cannot take (asymmetric, or more than half the undilated kernel) becomes an explicit -inf pad. Max-pools
are :class:`~pfconvert.ops.kernels.FastMaxPool2d`: in CPU inference they compute only the max.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from ..graph.geometry import Pair, axes_text, is_dynamic_same
from ._build import describe_op
from ._registry import BuildContext, Count, OpSpec, register_op
from .kernels import FastMaxPool2d

__all__ = ["MaxPoolSpec", "AvgPoolSpec", "Inherit", "pick", "static_pads"]

Inherit = Literal["inherit"]
Pads = tuple[int, int, int, int]  # (left, right, top, bottom), the order of F.pad / nn.ConstantPad2d


class _PoolFields(OpSpec):
    kernel_size: int | Inherit = Field("inherit", description="window size; `inherit`: the replaced layer's kernel "
                                       "(and dilation)")
    stride: int | Inherit = Field("inherit", description="stride; `inherit`: the replaced layer's")
    padding: int | Inherit = Field("inherit", description="padding; `inherit`: the replaced layer's (TF-'same' "
                                   "padding becomes a 'same' pool)")

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


class MaxPoolSpec(_PoolFields):
    """Max-pool of the replaced layer's geometry; pads with -inf. The paper's replacement of choice."""

    op: Literal["max_pool"]


class AvgPoolSpec(_PoolFields):
    """Average-pool of the replaced layer's geometry; padding is excluded from the mean unless `count_include_pad`."""

    op: Literal["avg_pool"]
    count_include_pad: bool = Field(False, description="count zero padding in the mean")
    ceil_mode: bool = Field(False, description="a last, partial window where the input does not divide evenly (as a "
                            "padded strided conv has on odd sizes)")


def pick(value: int | str, inherited: Pair) -> Pair:
    """The rule's value on both axes, or the layer's own per axis for ``inherit``."""
    return tuple(inherited) if value == "inherit" else (int(value), int(value))  # type: ignore[return-value]


def _square(pair: Pair) -> int | Pair:
    """An int for square geometry (``MaxPool2d(3, ...)``), the pair otherwise."""
    return pair[0] if pair[0] == pair[1] else pair


def static_pads(module: nn.Module, kernel: Pair, dilation: Pair) -> Pads:
    """The (left, right, top, bottom) padding of a conv with static padding.

    ``nn.Conv2d`` pads each axis symmetrically; torch's ``padding='same'`` puts the odd pixel of an even window on the
    right/bottom.
    """
    pad = getattr(module, "padding", 0)
    if isinstance(pad, str):
        if pad != "same":  # 'valid'
            return (0, 0, 0, 0)
        th, tw = ((k - 1) * d for k, d in zip(kernel, dilation))
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = (int(v) for v in (tuple(pad) if isinstance(pad, (tuple, list)) else (pad, pad)))
    return (pw, pw, ph, ph)


def _window(kernel: Pair, dilation: Pair) -> Pair:
    """Extent of a (dilated) window per axis."""
    return (kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1


def _max_pool(kernel: Pair, stride: Pair, dilation: Pair, pads: Pads, ctx: BuildContext) -> nn.Module:
    """A max-pool padding with -inf: ``nn.MaxPool2d`` when it can pad so itself, else an explicit -inf pad first."""
    window = _window(kernel, dilation)
    if any(2 * p > window[axis] for p, axis in zip(pads, (1, 1, 0, 0))):
        raise ctx.error(f"padding {pads} (left, right, top, bottom) is more than half the pool window {window}; set "
                        "replace.padding")
    left, right, top, bottom = pads
    if left == right and top == bottom and top <= kernel[0] // 2 and left <= kernel[1] // 2:
        return FastMaxPool2d(_square(kernel), _square(stride), _square((top, left)), dilation=_square(dilation))
    # nn.MaxPool2d takes symmetric padding of at most half the undilated kernel; -inf padding is the same thing
    pool = FastMaxPool2d(_square(kernel), _square(stride), 0, dilation=_square(dilation))
    return nn.Sequential(nn.ConstantPad2d(pads, float("-inf")), pool)


def _avg_pool(spec: AvgPoolSpec, kernel: Pair, stride: Pair, pads: Pads, ctx: BuildContext) -> nn.Module:
    left, right, top, bottom = pads
    if left != right or top != bottom:
        raise ctx.error(f"asymmetric padding {pads} (left, right, top, bottom) cannot be reproduced by avg-pool; set "
                        "replace.padding or use max_pool")
    if top > kernel[0] // 2 or left > kernel[1] // 2:
        raise ctx.error(f"padding {(top, left)} is more than half the pool kernel {kernel}; set replace.padding or "
                        "replace.kernel_size")
    return nn.AvgPool2d(_square(kernel), _square(stride), _square((top, left)), ceil_mode=spec.ceil_mode,
                        count_include_pad=spec.count_include_pad)


def _build_pool(spec: MaxPoolSpec | AvgPoolSpec, ctx: BuildContext) -> nn.Module:
    geo = ctx.geometry
    assert geo is not None
    k, s = pick(spec.kernel_size, geo.kernel), pick(spec.stride, geo.stride)
    d: Pair = geo.dilation if spec.kernel_size == "inherit" else (1, 1)
    average = isinstance(spec, AvgPoolSpec)
    if average and d != (1, 1):
        raise ctx.error(f"the layer is dilated (dilation {_square(d)}) and avg-pool has no dilation; exclude it "
                        "(match.dilation: 1) or use max_pool")
    if spec.padding == "inherit" and is_dynamic_same(ctx.module):
        from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame  # the module is timm's: timm is loaded

        if average:
            return AvgPool2dSame(_square(k), _square(s), count_include_pad=spec.count_include_pad)
        return MaxPool2dSame(_square(k), _square(s), dilation=_square(d))
    pads = static_pads(ctx.module, geo.kernel, geo.dilation) if spec.padding == "inherit" else (spec.padding,) * 4
    if average:
        return _avg_pool(spec, k, s, pads, ctx)  # type: ignore[arg-type]
    return _max_pool(k, s, d, pads, ctx)  # type: ignore[arg-type]


@register_op(MaxPoolSpec, counts={"aten::max_pool2d": Count.POOL_WINDOW,
                                  "aten::max_pool2d_with_indices": Count.POOL_WINDOW},
             fast_kernels={nn.MaxPool2d: FastMaxPool2d.from_pool})
def build_max_pool(spec: MaxPoolSpec, ctx: BuildContext) -> nn.Module:
    """A max-pool with the layer's geometry (see the module docstring)."""
    return _build_pool(spec, ctx)


@register_op(AvgPoolSpec, counts={"aten::avg_pool2d": Count.POOL_WINDOW})
def build_avg_pool(spec: AvgPoolSpec, ctx: BuildContext) -> nn.Module:
    """An average-pool with the layer's geometry (see the module docstring)."""
    return _build_pool(spec, ctx)


@describe_op.register(nn.MaxPool2d)
@describe_op.register(nn.AvgPool2d)
def _describe_pool(module: nn.Module) -> str:
    k, s, p, d = (axes_text(v) for v in (module.kernel_size, module.stride, module.padding,  # type: ignore[attr-defined]
                                         getattr(module, "dilation", 1)))
    same = " same" if type(module).__name__.endswith("Same") else f" p{p}"
    k = k if "x" in k else f"{k}x{k}"
    name = "MaxPool2d" if isinstance(module, FastMaxPool2d) else type(module).__name__  # same op, faster kernel
    return f"{name} {k} s{s}{same}" + (f" d{d}" if d != "1" else "")
