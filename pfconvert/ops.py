"""Parameter-free replacement modules and the builders that size them from the layer they replace.

Builders take the replace spec and the matched module and return an ``nn.Module`` with the same output geometry:
kernel/stride/padding/dilation are inherited per axis unless the rule sets them (a 1x5 conv becomes a 1x5 pool);
TF-'same' convs (timm ``Conv2dSame``: dynamic, asymmetric padding) get 'same' pools (timm ``MaxPool2dSame`` pads with
-inf); padding ``nn.MaxPool2d`` cannot take (asymmetric, or more than half the undilated kernel) becomes an explicit
-inf pad; a depth multiplier (out = m * in channels) repeats each channel m times, which is exactly what the grouped
conv's channel layout does.
"""

from __future__ import annotations

import copy
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from .deploy import FastMaxPool2d
from .errors import ConversionError
from .match import axes_text, conv_geometry
from .schema import IdentitySpec, KeepSpec, PoolSpec, SequenceSpec, ShiftSpec

__all__ = [
    "ChannelRepeat", "Shift", "Subsample", "DropExtraArgs", "build_replacement", "describe_op", "is_dynamic_same",
    "takes_extra_args",
]


def is_dynamic_same(module: nn.Module) -> bool:
    """Whether a conv pads TF-'same' at run time (timm Conv2dSame/Conv2dSameExport, StdConv2dSame, CondConv2d)."""
    name = type(module).__name__
    return name.startswith("Conv2dSame") or bool(getattr(module, "same_pad", False)) or bool(
        getattr(module, "dynamic_padding", False))


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


Pair = tuple[int, int]
Pads = tuple[int, int, int, int]  # (left, right, top, bottom), the order of F.pad / nn.ConstantPad2d


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


def _pick(value: int | str, inherited: Pair) -> Pair:
    return tuple(inherited) if value == "inherit" else (int(value), int(value))  # type: ignore[return-value]


def _square(pair: Pair) -> int | Pair:
    """An int for square geometry (``MaxPool2d(3, ...)``, as before), the pair otherwise."""
    return pair[0] if pair[0] == pair[1] else pair


def _static_pads(module: nn.Module, kernel: Pair, dilation: Pair) -> Pads:
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


def _max_pool(kernel: Pair, stride: Pair, dilation: Pair, pads: Pads, path: str) -> nn.Module:
    """A max-pool padding with -inf: ``nn.MaxPool2d`` when it can pad so itself, else an explicit -inf pad first."""
    window = _window(kernel, dilation)
    if any(2 * p > window[axis] for p, axis in zip(pads, (1, 1, 0, 0))):
        raise ConversionError(f"layer '{path}': padding {pads} (left, right, top, bottom) is more than half the pool "
                              f"window {window}; set replace.padding")
    left, right, top, bottom = pads
    symmetric = left == right and top == bottom
    if symmetric and top <= kernel[0] // 2 and left <= kernel[1] // 2:
        return FastMaxPool2d(_square(kernel), _square(stride), _square((top, left)), dilation=_square(dilation))
    # nn.MaxPool2d takes symmetric padding of at most half the undilated kernel; -inf padding is the same thing
    pool = FastMaxPool2d(_square(kernel), _square(stride), 0, dilation=_square(dilation))
    return nn.Sequential(nn.ConstantPad2d(pads, float("-inf")), pool)


def _avg_pool(spec: PoolSpec, kernel: Pair, stride: Pair, pads: Pads, path: str) -> nn.Module:
    left, right, top, bottom = pads
    if left != right or top != bottom:
        raise ConversionError(f"layer '{path}': asymmetric padding {pads} (left, right, top, bottom) cannot be "
                              "reproduced by avg-pool; set replace.padding or use max_pool")
    if top > kernel[0] // 2 or left > kernel[1] // 2:
        raise ConversionError(f"layer '{path}': padding {(top, left)} is more than half the pool kernel {kernel}; "
                              "set replace.padding or replace.kernel_size")
    padding = _square((top, left))
    return nn.AvgPool2d(_square(kernel), _square(stride), padding, count_include_pad=spec.count_include_pad)


def _pool(spec: PoolSpec, module: nn.Module, geo: dict, path: str) -> nn.Module:
    """A pool with the layer's geometry (each of kernel/stride/padding/dilation per axis) unless the rule sets it."""
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    k, s = _pick(spec.kernel_size, geo["kernel"]), _pick(spec.stride, geo["stride"])
    d: Pair = tuple(geo["dilation"]) if spec.kernel_size == "inherit" else (1, 1)  # type: ignore[assignment]
    if spec.op == "avg_pool" and d != (1, 1):
        raise ConversionError(f"layer '{path}' is dilated (dilation {_square(d)}) and avg-pool has no dilation; "
                              "exclude it (match.dilation: 1) or use max_pool")
    if spec.padding == "inherit" and is_dynamic_same(module):
        if spec.op == "max_pool":
            return MaxPool2dSame(_square(k), _square(s), dilation=_square(d))
        return AvgPool2dSame(_square(k), _square(s), count_include_pad=spec.count_include_pad)
    if spec.padding == "inherit":
        pads = _static_pads(module, geo["kernel"], geo["dilation"])
    else:
        pads = (spec.padding,) * 4  # type: ignore[assignment]
    if spec.op == "avg_pool":
        return _avg_pool(spec, k, s, pads, path)
    return _max_pool(k, s, d, pads, path)


def _require_square(geo: dict, path: str, what: str) -> None:
    if geo["kernel"][0] != geo["kernel"][1] or geo["stride"][0] != geo["stride"][1]:
        raise ConversionError(f"layer '{path}' has a non-square kernel/stride {geo['kernel']}/{geo['stride']} and "
                              f"{what} needs a square one; exclude it from the rule (match.exclude) or use a pool")


def _identity(module: nn.Module, geo: dict, path: str) -> nn.Module:
    if geo["stride"] == (1, 1):
        return nn.Identity()
    _require_square(geo, path, "a strided identity")
    s, k, d = geo["stride"][0], geo["kernel"][0], geo["dilation"][0]
    if is_dynamic_same(module):
        return Subsample(s, same=(k, d))
    left, right, top, bottom = _static_pads(module, geo["kernel"], geo["dilation"])
    if left != top:
        raise ConversionError(f"layer '{path}': padding {(top, left)} differs per axis; a strided identity needs "
                              "the same padding on both axes")
    return Subsample(s, offset=(k - 1) * d // 2 - top)


def _keep(spec: KeepSpec, module: nn.Module, geo: dict, path: str) -> nn.Module:
    kept = copy.deepcopy(module)
    s = _pick(spec.stride, geo["stride"])
    kept.stride = s  # static padding k//2 suits any stride; dynamic 'same' padding adapts at run time
    return kept


def _build_one(spec: object, module: nn.Module, geo: dict, path: str) -> nn.Module:
    if isinstance(spec, PoolSpec):
        return _pool(spec, module, geo, path)
    if isinstance(spec, IdentitySpec):
        return _identity(module, geo, path)
    if isinstance(spec, ShiftSpec):
        if geo["kernel"] != (3, 3) or geo["dilation"] != (1, 1):
            raise ConversionError(f"layer '{path}': shift replaces 3x3 undilated layers only; restrict the rule "
                                  "with match.kernel_size: 3")
        _require_square(geo, path, "shift")
        shift: nn.Module = Shift(geo["in"], spec.groups)
        return nn.Sequential(shift, _identity(module, geo, path)) if geo["stride"][0] > 1 else shift
    if isinstance(spec, KeepSpec):
        return _keep(spec, module, geo, path)
    raise ConversionError(f"layer '{path}': replacement {type(spec).__name__} cannot replace a conv")


def build_replacement(spec: object, module: nn.Module, path: str) -> nn.Module:
    """Build the module that replaces ``module`` (at ``path``) as ``spec`` asks.

    Pools take the layer's kernel, stride, padding and dilation per axis, so rectangular (1xk, kx1) layers become
    rectangular pools. A layer whose forward takes more than the input (CondConv2d's routing weights) gets its op
    wrapped in :class:`DropExtraArgs`.

    Raises:
        ConversionError: the spec cannot reproduce the layer's geometry (named in the message).
    """
    geo = conv_geometry(module)
    if geo is None:
        raise ConversionError(f"layer '{path}' ({type(module).__name__}) is not a conv layer")
    keeps = isinstance(spec, SequenceSpec) and any(isinstance(step, KeepSpec) for step in spec.steps)
    repeats = geo["out"] // geo["in"] if geo["groups"] == geo["in"] and geo["out"] % geo["in"] == 0 else None
    if geo["in"] != geo["out"] and repeats is None and not keeps:
        raise ConversionError(f"layer '{path}' maps {geo['in']} to {geo['out']} channels (groups={geo['groups']}); "
                              "a parameter-free op keeps the channel count. Restrict the rule with "
                              "match.same_channels: true")
    if isinstance(spec, SequenceSpec):
        op: nn.Module = nn.Sequential(*[_build_one(step, module, geo, path) for step in spec.steps])
    else:
        op = _build_one(spec, module, geo, path)
    if repeats is not None and repeats > 1 and not keeps:
        op = nn.Sequential(op, ChannelRepeat(repeats))
    if takes_extra_args(module):
        op = DropExtraArgs(op)
    return op


def describe_op(module: nn.Module) -> str:
    """Compact text of a replacement (``MaxPool2d 3x3 s2 p1``, ``AvgPool2d 2x2 s2 -> Conv2d 128->128 k3 s1``)."""
    if isinstance(module, nn.Sequential):
        return " -> ".join(describe_op(m) for m in module)
    if isinstance(module, DropExtraArgs):
        return describe_op(module.op)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p, d = (axes_text(v) for v in (module.kernel_size, module.stride, module.padding,
                                             getattr(module, "dilation", 1)))
        same = " same" if type(module).__name__.endswith("Same") else f" p{p}"
        k = k if "x" in k else f"{k}x{k}"
        name = "MaxPool2d" if isinstance(module, FastMaxPool2d) else type(module).__name__  # same op, oneDNN kernel
        return f"{name} {k} s{s}{same}" + (f" d{d}" if d != "1" else "")
    geo = conv_geometry(module)
    if geo is not None:
        k, s = axes_text(geo["kernel"]), axes_text(geo["stride"])
        return f"{type(module).__name__} {geo['in']}->{geo['out']} k{k} s{s}"
    if isinstance(module, nn.ConstantPad2d):
        pads = tuple(module.padding)
        return f"pad {pads[0] if len(set(pads)) == 1 else pads} (-inf)"
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__
