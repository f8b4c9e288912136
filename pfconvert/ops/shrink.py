"""``shrink``: a conv whose input map is so small that only part of its kernel can ever read a real pixel (the rest
reads zero padding at every output position), replaced by the smaller conv it equals.

A 3x3 conv with padding 1 on a 1x1 map reads that pixel with its centre tap only: it is a 1x1 conv with the centre
weights. In general, per axis, tap ``j`` of a layer with kernel ``k``, stride ``s``, dilation ``d`` and padding
``p`` (before the map) reads input index ``o * s - p + j * d`` at output ``o``; the taps that read an index inside
the map at some output are kept (their span, if they are not contiguous), the others dropped, and the padding
adjusted so that every kept tap reads the same index as before. The result is exact (same outputs to float
rounding, no fine-tune) for the input size the model was traced at, and only for it: the shrunk conv refuses
another input size at run time instead of computing something else. See :func:`plan_taps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.geometry import Pair, axes_text, is_dynamic_same
from ._build import describe_op
from ._registry import BuildContext, OpSpec, register_op
from .pool import static_pads

__all__ = ["ShrinkSpec", "ShrunkConv2d", "TapPlan", "axis_taps", "plan_taps", "supports_shrink", "shrink_conv",
           "geometry_note", "IDENTITY_CHECK_PIXELS"]

IDENTITY_CHECK_PIXELS = 64
""":func:`geometry_note` checks whether a parameter-free replacement is an identity on maps of at most this many
pixels (a pool of window k > 1 can be one only where the map is no larger than its dilation)."""


class ShrinkSpec(OpSpec):
    """The conv cut down to the taps that can read a real pixel of its (traced) input map: a 3x3 conv on a 1x1 map
    becomes the 1x1 conv of its centre tap. Exact at the traced input size, no fine-tune; it keeps the layer's
    weights (not parameter-free). `pfconvert plan` adds it by itself wherever it applies."""

    op: Literal["shrink"]

    def keeps_layer(self) -> bool:
        return True


@dataclass(frozen=True)
class TapPlan:
    """Which taps of a conv's kernel stay, and the padding that makes the smaller kernel read what they read.

    ``rows`` / ``cols``: ``[start, stop)`` of the kept taps per axis; ``pads``: (left, right, top, bottom) of the
    smaller conv (negative values crop); ``map_size``: the (H, W) input it is exact for.
    """

    kernel: Pair
    rows: Pair
    cols: Pair
    pads: tuple[int, int, int, int]
    map_size: Pair

    @property
    def new_kernel(self) -> Pair:
        """The kernel of the smaller conv."""
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]

    @property
    def shrinks(self) -> bool:
        """Whether some taps are out of play."""
        return self.new_kernel != self.kernel

    def describe(self) -> str:
        """``only the centre tap of the 3x3 kernel reads the 1x1 map``, or the kept rows and columns."""
        k, size = axes_text(self.kernel), f"{self.map_size[0]}x{self.map_size[1]}"
        k = k if "x" in k else f"{k}x{k}"
        if self.new_kernel == (1, 1):
            where = "the centre tap" if (self.rows[0], self.cols[0]) == (self.kernel[0] // 2, self.kernel[1] // 2) \
                else f"tap ({self.rows[0]}, {self.cols[0]})"
            return f"exact: only {where} of the {k} kernel reads the {size} map"
        return (f"exact: only taps rows {self.rows[0]}-{self.rows[1] - 1}, columns {self.cols[0]}-{self.cols[1] - 1} "
                f"of the {k} kernel read the {size} map")


def axis_taps(size: int, kernel: int, stride: int, dilation: int, pad_before: int,
              pad_after: int) -> tuple[int, int, int] | None:
    """Along one axis: ``(first kept tap, last kept tap + 1, output size)``, or None when no tap reads the map.

    Tap ``j`` reads index ``o * stride - pad_before + j * dilation`` at output ``o``; it is kept when that index is
    inside ``[0, size)`` for some output.
    """
    out = (size + pad_before + pad_after - (kernel - 1) * dilation - 1) // stride + 1
    live = [j for j in range(kernel)
            if any(0 <= o * stride - pad_before + j * dilation < size for o in range(max(out, 0)))]
    return (live[0], live[-1] + 1, out) if live else None


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF-'same' padding of one axis for an input of ``size`` (timm ``pad_same``)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def supports_shrink(module: nn.Module) -> str | None:
    """None when :func:`plan_taps` can shrink this kind of layer, else why not."""
    name = type(module).__name__
    if not (type(module) is nn.Conv2d or name in ("Conv2dSame", "Conv2dSameExport")):
        return (f"{name} is not a plain Conv2d (its forward may compute its weight, e.g. weight standardisation); "
                "shrink takes nn.Conv2d and timm Conv2dSame")
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return f"padding mode {module.padding_mode!r} reads real pixels where zero padding would be"  # type: ignore
    return None


def plan_taps(module: nn.Module, input_shapes: tuple[tuple[int, ...], ...] | list[tuple[int, ...]]) -> TapPlan:
    """The taps of ``module`` (a conv) that can read its input map, for the given input shapes (every call of the
    layer; they must agree on the map size).

    Raises:
        ValueError: no input shape, calls of different map sizes, an unsupported layer, or no tap reads the map.
    """
    why = supports_shrink(module)
    if why is not None:
        raise ValueError(why)
    maps = {tuple(shape[-2:]) for shape in input_shapes if len(shape) == 4}
    if len(maps) != 1:
        raise ValueError("needs the layer's input map size from a traced forward" if not maps else
                         f"the layer is called on maps of different sizes {sorted(maps)}; a shrunk conv fits one")
    h, w = maps.pop()
    kernel: Pair = tuple(int(v) for v in module.kernel_size)  # type: ignore[attr-defined,assignment]
    stride: Pair = tuple(int(v) for v in module.stride)  # type: ignore[attr-defined,assignment]
    dilation: Pair = tuple(int(v) for v in module.dilation)  # type: ignore[attr-defined,assignment]
    if is_dynamic_same(module):
        (left, right), (top, bottom) = (_same_pads(w, kernel[1], stride[1], dilation[1]),
                                        _same_pads(h, kernel[0], stride[0], dilation[0]))
    else:
        left, right, top, bottom = static_pads(module, kernel, dilation)
    rows = axis_taps(h, kernel[0], stride[0], dilation[0], top, bottom)
    cols = axis_taps(w, kernel[1], stride[1], dilation[1], left, right)
    if rows is None or cols is None:
        raise ValueError(f"no tap of the kernel reads the {h}x{w} map (the output is the bias alone)")
    pads = []
    for (first, stop, out), before, size, s, d in ((cols, left, w, stride[1], dilation[1]),
                                                   (rows, top, h, stride[0], dilation[0])):
        new_before = before - first * d
        extent = (out - 1) * s + (stop - first - 1) * d + 1  # input span the kept taps read, padding included
        pads += [new_before, extent - size - new_before]
    return TapPlan(kernel, rows[:2], cols[:2], tuple(pads), (h, w))  # type: ignore[arg-type]


class ShrunkConv2d(nn.Conv2d):
    """A conv cut down by :func:`plan_taps`: exact for input maps of ``map_size`` only, and it says so when given
    another size. ``pads`` (left, right, top, bottom; negative crops) is applied explicitly when the conv's own
    symmetric padding cannot express it."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Pair, stride: Pair, dilation: Pair, groups: int,
                 bias: bool, pads: tuple[int, int, int, int], map_size: Pair, **factory: object) -> None:
        left, right, top, bottom = pads
        symmetric = left == right >= 0 and top == bottom >= 0
        super().__init__(in_channels, out_channels, kernel, stride, (top, left) if symmetric else 0, dilation,
                         groups, bias, **factory)  # type: ignore[arg-type]
        self.pads = None if symmetric else tuple(pads)
        self.map_size = tuple(map_size)
        self.note = ""  # what was kept, for `pfconvert inspect` (set by shrink_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.map_size:
            raise RuntimeError(f"this conv was shrunk for {self.map_size[0]}x{self.map_size[1]} input maps (the "
                               f"input size of the conversion) and got {tuple(x.shape[-2:])}; convert the model "
                               "again at this input size")
        if self.pads is not None:
            x = F.pad(x, self.pads)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", map_size={self.map_size}" + (f", pads={self.pads}" if self.pads else "")


def shrink_conv(module: nn.Conv2d, plan: TapPlan) -> ShrunkConv2d:
    """The smaller conv of ``plan``, with ``module``'s kept weights and its bias (same device, dtype, mode)."""
    kernel = plan.new_kernel
    dilation: Pair = tuple(1 if k == 1 else int(d) for k, d in zip(kernel, module.dilation))  # type: ignore
    new = ShrunkConv2d(module.in_channels, module.out_channels, kernel, tuple(module.stride),  # type: ignore[arg-type]
                       dilation, module.groups, module.bias is not None, plan.pads, plan.map_size,
                       device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(module.weight[:, :, plan.rows[0]:plan.rows[1], plan.cols[0]:plan.cols[1]])
        if module.bias is not None:
            new.bias.copy_(module.bias)  # type: ignore[union-attr]
    new.note = plan.describe()
    return new.train(module.training)


def geometry_note(op: nn.Module, input_shapes: tuple[tuple[int, ...], ...] | list[tuple[int, ...]]) -> str:
    """What the replacement amounts to on the layer's traced input map, when that is worth saying: a shrunk conv's
    kept taps, or that a parameter-free replacement (a pool) is an identity there (a 3x3 max-pool with stride 1 and
    padding 1 on a 1x1 map). Empty otherwise."""
    inner = getattr(op, "op", op)  # DropExtraArgs
    if isinstance(inner, ShrunkConv2d):
        return inner.note
    shapes = {tuple(s) for s in input_shapes if len(s) == 4}
    if len(shapes) != 1 or any(True for _ in op.parameters()) or isinstance(inner, nn.Identity):
        return ""
    _, c, h, w = shapes.pop()
    if h * w > IDENTITY_CHECK_PIXELS:
        return ""
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    mode = op.training
    try:
        with torch.no_grad():
            out = op.eval()(x)
    except Exception:  # noqa: BLE001 - the shape check reports ops that cannot take the input
        return ""
    finally:
        op.train(mode)
    if isinstance(out, torch.Tensor) and out.shape == x.shape and torch.equal(out, x):
        return f"an identity on the {h}x{w} map (every window holds one real pixel)"
    return ""


@register_op(ShrinkSpec, in_sequence=False)
def build_shrink(spec: ShrinkSpec, ctx: BuildContext) -> nn.Module:
    """The smaller conv the layer equals on its traced input map (see the module docstring)."""
    try:
        plan = plan_taps(ctx.module, ctx.input_shapes)
    except ValueError as exc:
        raise ctx.error(f"cannot shrink: {exc}") from None
    if not plan.shrinks:
        raise ctx.error(f"cannot shrink: every tap of the kernel reads the {plan.map_size[0]}x{plan.map_size[1]} "
                        "input map; leave the layer out of the shrink rule")
    return shrink_conv(ctx.module, plan)  # type: ignore[arg-type]


@describe_op.register
def _(module: ShrunkConv2d) -> str:
    k, s = axes_text(module.kernel_size), axes_text(module.stride)
    return f"Conv2d {module.in_channels}->{module.out_channels} k{k} s{s} (shrunk)"
