"""Parameter-free replacement modules and the builders that size them from the layer they replace.

Builders take the replace spec and the matched module and return an ``nn.Module`` with the same output geometry:
kernel/stride/padding are inherited unless the rule sets them; TF-'same' convs (timm ``Conv2dSame``: dynamic,
asymmetric padding) get 'same' pools (timm ``MaxPool2dSame`` pads with -inf); a depth multiplier (out = m * in
channels) repeats each channel m times, which is exactly what the grouped conv's channel layout does.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConversionError
from .match import conv_geometry
from .schema import IdentitySpec, KeepSpec, PoolSpec, SequenceSpec, ShiftSpec

__all__ = ["ChannelRepeat", "Shift", "Subsample", "DropExtraArgs", "build_replacement", "describe_op", "is_dynamic_same"]


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
    """Calls ``op(x)`` for layers that were called with extra arguments (timm CondConv2d gets routing weights)."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        return self.op(x)


def _pick(value: int | str, inherited: int) -> int:
    return inherited if value == "inherit" else int(value)


def _static_padding(module: nn.Module, kernel: int, dilation: int) -> int:
    pad = getattr(module, "padding", 0)
    if isinstance(pad, str):  # torch's padding='same' (stride 1) / 'valid'
        return dilation * (kernel - 1) // 2 if pad == "same" else 0
    pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad, pad)
    if pad[0] != pad[1]:
        raise ConversionError(f"non-square padding {pad} is not supported")
    return int(pad[0])


def _pool(spec: PoolSpec, module: nn.Module, geo: dict, path: str) -> nn.Module:
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    k = _pick(spec.kernel_size, geo["kernel"][0])
    s = _pick(spec.stride, geo["stride"][0])
    d = geo["dilation"][0] if spec.kernel_size == "inherit" else 1
    same = spec.padding == "inherit" and is_dynamic_same(module)
    if spec.op == "avg_pool" and d != 1:
        raise ConversionError(f"layer '{path}' is dilated (dilation {d}) and avg-pool has no dilation; "
                              "exclude it (match.dilation: 1) or use max_pool")
    if same:
        if spec.op == "max_pool":
            return MaxPool2dSame(k, s, dilation=d)
        return AvgPool2dSame(k, s, count_include_pad=spec.count_include_pad)
    p = _static_padding(module, geo["kernel"][0], geo["dilation"][0]) if spec.padding == "inherit" else spec.padding
    if spec.op == "avg_pool":
        if p > k // 2:
            raise ConversionError(f"layer '{path}': padding {p} is more than half the pool kernel {k}; "
                                  "set replace.padding or replace.kernel_size")
        return nn.AvgPool2d(k, s, p, count_include_pad=spec.count_include_pad)
    if 2 * p > (k - 1) * d + 1:
        raise ConversionError(f"layer '{path}': padding {p} is more than half the pool window; set replace.padding")
    if p > k // 2:  # dilated windows: nn.MaxPool2d checks pad against the undilated kernel
        return nn.Sequential(nn.ConstantPad2d(p, float("-inf")), nn.MaxPool2d(k, s, 0, dilation=d))
    return nn.MaxPool2d(k, s, p, dilation=d)


def _identity(module: nn.Module, geo: dict) -> nn.Module:
    s = geo["stride"][0]
    if s == 1:
        return nn.Identity()
    k, d = geo["kernel"][0], geo["dilation"][0]
    if is_dynamic_same(module):
        return Subsample(s, same=(k, d))
    return Subsample(s, offset=(k - 1) * d // 2 - _static_padding(module, k, d))


def _keep(spec: KeepSpec, module: nn.Module, geo: dict, path: str) -> nn.Module:
    kept = copy.deepcopy(module)
    s = _pick(spec.stride, geo["stride"][0])
    kept.stride = (s, s)  # static padding k//2 suits any stride; dynamic 'same' padding adapts at run time
    return kept


def _build_one(spec: object, module: nn.Module, geo: dict, path: str) -> nn.Module:
    if isinstance(spec, PoolSpec):
        return _pool(spec, module, geo, path)
    if isinstance(spec, IdentitySpec):
        return _identity(module, geo)
    if isinstance(spec, ShiftSpec):
        if geo["kernel"] != (3, 3) or geo["dilation"] != (1, 1):
            raise ConversionError(f"layer '{path}': shift replaces 3x3 undilated layers only; restrict the rule "
                                  "with match.kernel_size: 3")
        shift: nn.Module = Shift(geo["in"], spec.groups)
        return nn.Sequential(shift, _identity(module, geo)) if geo["stride"][0] > 1 else shift
    if isinstance(spec, KeepSpec):
        return _keep(spec, module, geo, path)
    raise ConversionError(f"layer '{path}': replacement {type(spec).__name__} cannot replace a conv")


def build_replacement(spec: object, module: nn.Module, path: str) -> nn.Module:
    """Build the module that replaces ``module`` (at ``path``) as ``spec`` asks.

    Raises:
        ConversionError: the spec cannot reproduce the layer's geometry (named in the message).
    """
    geo = conv_geometry(module)
    if geo is None:
        raise ConversionError(f"layer '{path}' ({type(module).__name__}) is not a conv layer")
    if geo["kernel"][0] != geo["kernel"][1] or geo["stride"][0] != geo["stride"][1]:
        raise ConversionError(f"layer '{path}' has a non-square kernel/stride {geo['kernel']}/{geo['stride']}; "
                              "exclude it from the rule (match.exclude)")
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
    if type(module).__name__ == "CondConv2d":
        op = DropExtraArgs(op)
    return op


def describe_op(module: nn.Module) -> str:
    """Compact text of a replacement (``MaxPool2d 3x3 s2 p1``, ``AvgPool2d 2x2 s2 -> Conv2d 128->128 k3 s1``)."""
    if isinstance(module, nn.Sequential):
        return " -> ".join(describe_op(m) for m in module)
    if isinstance(module, DropExtraArgs):
        return describe_op(module.op)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = (v if isinstance(v, int) else v[0] for v in (module.kernel_size, module.stride, module.padding))
        same = " same" if type(module).__name__.endswith("Same") else f" p{p}"
        dil = getattr(module, "dilation", 1)
        dil = dil if isinstance(dil, int) else dil[0]
        return f"{type(module).__name__} {k}x{k} s{s}{same}" + (f" d{dil}" if dil != 1 else "")
    geo = conv_geometry(module)
    if geo is not None:
        return f"{type(module).__name__} {geo['in']}->{geo['out']} k{geo['kernel'][0]} s{geo['stride'][0]}"
    if isinstance(module, nn.ConstantPad2d):
        return f"pad {module.padding[0]} (-inf)"
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__
