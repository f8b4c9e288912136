"""Building a replacement for a matched layer, whatever the op: what every conv site needs around the op's own
module, and the one-line description of a built module.

Around an op built for a conv layer: a depth multiplier (out = m * in channels) repeats each channel m times, which is
exactly what the grouped conv's channel layout does; a layer whose forward takes more than the input (timm's
CondConv2d gets routing weights) has the op wrapped so that the extra arguments are dropped; a layer that changes the
channel count any other way is refused, unless the op keeps the layer itself.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from ..graph.geometry import axes_text, conv_geometry
from ._registry import BuildContext, OpSpec, get_op

__all__ = ["ChannelRepeat", "DropExtraArgs", "takes_extra_args", "build_replacement", "describe_op"]


class ChannelRepeat(nn.Module):
    """Repeats each channel ``repeats`` times (``[a, b] -> [a, a, b, b]``), as a depth-multiplier conv lays them out."""

    def __init__(self, repeats: int) -> None:
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.repeats, dim=1)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}"


class DropExtraArgs(nn.Module):
    """Calls ``op(x)`` for layers that are called with extra arguments (timm CondConv2d gets routing weights)."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return self.op(x)


def takes_extra_args(module: nn.Module) -> bool:
    """Whether ``module.forward`` accepts more than the input tensor (a bare pool called so would fail).

    Read from the signature, not the class name: CondConv2d's ``forward(x, routing_weights)`` qualifies, and so does
    any conv subclass with optional extra parameters, which its callers may pass.
    """
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) > 1 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def build_replacement(spec: OpSpec, module: nn.Module, path: str, model: nn.Module | None = None,
                      input_shapes: tuple[tuple[int, ...], ...] = ()) -> nn.Module:
    """Build the module that replaces ``module`` (at ``path`` of ``model``) as ``spec`` asks; ``input_shapes``: the
    layer's input shape at each call of the traced forward (ops that depend on the input map read them).

    Raises:
        ConversionError: the op cannot reproduce the layer's geometry or channel count (named in the message).
    """
    op = get_op(spec.op)  # type: ignore[attr-defined]
    geometry = conv_geometry(module)
    ctx = BuildContext(module, path, model if model is not None else module, geometry, tuple(input_shapes))
    if geometry is None:
        if "conv2d" in op.sites and len(op.sites) == 1:
            raise ctx.error(f"{type(module).__name__} is not a conv layer; op {op.name!r} replaces conv layers")
        return op.build(spec, ctx)
    keeps = spec.keeps_layer()
    repeats = geometry.depth_multiplier
    if geometry.in_channels != geometry.out_channels and repeats is None and not keeps:
        raise ctx.error(f"maps {geometry.in_channels} to {geometry.out_channels} channels (groups={geometry.groups}); "
                        "a parameter-free op keeps the channel count. Restrict the rule with match.same_channels: true")
    built = op.build(spec, ctx)
    if repeats is not None and repeats > 1 and not keeps:
        built = nn.Sequential(built, ChannelRepeat(repeats))
    if takes_extra_args(module):
        built = DropExtraArgs(built)
    return built


@functools.singledispatch
def describe_op(module: nn.Module) -> str:
    """Compact text of a built replacement (``MaxPool2d 3x3 s2 p1``, ``AvgPool2d 2x2 s2 -> Conv2d 128->128 k3 s1``).

    Op modules register the text of their own module classes with ``@describe_op.register(TheirModule)``.
    """
    geometry = conv_geometry(module)
    if geometry is not None:
        return f"{type(module).__name__} {geometry.in_channels}->{geometry.out_channels} k{axes_text(geometry.kernel)}" \
               f" s{axes_text(geometry.stride)}"
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__


@describe_op.register
def _(module: nn.Sequential) -> str:
    return " -> ".join(describe_op(m) for m in module)


@describe_op.register
def _(module: DropExtraArgs) -> str:
    return describe_op(module.op)


@describe_op.register
def _(module: nn.ConstantPad2d) -> str:
    pads = tuple(module.padding)
    return f"pad {pads[0] if len(set(pads)) == 1 else pads} ({module.value:g})"
