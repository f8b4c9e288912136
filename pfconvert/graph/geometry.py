"""The geometry of a convolution as one typed record: channels, groups, kernel, stride, dilation, padding kind."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["Pair", "ConvGeometry", "conv_geometry", "axes_text", "is_dynamic_same"]

Pair = tuple[int, int]


def _pair(value: object) -> Pair:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)  # type: ignore[call-overload]


def is_dynamic_same(module: nn.Module) -> bool:
    """Whether a conv pads TF-'same' at run time (timm Conv2dSame/Conv2dSameExport, StdConv2dSame, CondConv2d)."""
    name = type(module).__name__
    return name.startswith("Conv2dSame") or bool(getattr(module, "same_pad", False)) or bool(
        getattr(module, "dynamic_padding", False))


@dataclass(frozen=True)
class ConvGeometry:
    """What a replacement needs to know of a conv layer. Kernel, stride and dilation are (height, width)."""

    in_channels: int
    out_channels: int
    groups: int
    kernel: Pair
    stride: Pair
    dilation: Pair

    @property
    def depthwise(self) -> bool:
        """One filter group per input channel (``groups == in_channels > 1``), with a whole depth multiplier."""
        return self.groups == self.in_channels and self.in_channels > 1 and self.out_channels % self.in_channels == 0

    @property
    def grouped(self) -> bool:
        """Grouped but not depthwise (``1 < groups``, not one group per input channel): ResNeXt's and RegNet's 3x3."""
        return self.groups > 1 and not self.depthwise

    @property
    def dense(self) -> bool:
        """An ordinary conv (``groups == 1``)."""
        return self.groups == 1

    @property
    def depth_multiplier(self) -> int | None:
        """``out // in`` when each output channel reads one input channel (``groups == in_channels``, out a multiple
        of in: a depthwise conv, or a single-channel input), else None."""
        if self.groups == self.in_channels and self.out_channels % self.in_channels == 0:
            return self.out_channels // self.in_channels
        return None

    @property
    def square(self) -> bool:
        """Square kernel and stride."""
        return self.kernel[0] == self.kernel[1] and self.stride[0] == self.stride[1]

    def describe(self, name: str = "Conv2d") -> str:
        """``Conv2d 96->96 k3 s2 dw``."""
        dw = " dw" if self.groups == self.in_channels and self.in_channels > 1 else ""
        return f"{name} {self.in_channels}->{self.out_channels} k{axes_text(self.kernel)} s{axes_text(self.stride)}{dw}"


def conv_geometry(module: nn.Module) -> ConvGeometry | None:
    """The geometry of a conv-like module (any ``nn.Conv2d`` subclass or timm's CondConv2d), else None."""
    if not (isinstance(module, nn.Conv2d) or type(module).__name__ == "CondConv2d"):
        return None
    return ConvGeometry(int(module.in_channels), int(module.out_channels), int(module.groups),  # type: ignore[arg-type]
                        _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation))


def axes_text(value: object) -> str:
    """``3`` for a square size (``3`` or ``(3, 3)``), ``1x5`` for a rectangular one (height x width)."""
    h, w = _pair(value)
    return str(h) if h == w else f"{h}x{w}"
