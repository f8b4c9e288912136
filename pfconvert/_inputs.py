"""An input shape checked against a model before any real tensor of that shape exists.

One forward on meta tensors (shapes only: no memory, no compute) finds both what a model refuses (a ViT built for
224x224 asserts on 32x32) and how large its activations are, from which the memory of a batch is estimated and compared
with the memory available; each refusal is one line saying what, where and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from ._format import human
from .errors import ModelError, PfconvertError, one_line

__all__ = ["Footprint", "footprint", "available_memory", "check_input", "check_memory"]

_INFERENCE_COPIES = 3
"""Activations alive at once in inference, in units of the largest one (a layer's input, output and a temporary)."""
_TRAINING_COPIES = 2
"""Training keeps every activation for the backward, and as much again for their gradients."""
_SHARE = 0.5
"""Share of the available memory a run may plan to use: the estimate is rough, and other processes need theirs."""


@dataclass(frozen=True)
class Footprint:
    """Bytes of one image through a model: the input, the largest activation (a module's output), all activations
    together, and the model's parameters and buffers."""

    input_bytes: int
    largest_bytes: int
    total_bytes: int
    param_bytes: int

    def needed(self, batch: int, training: bool = False) -> int:
        """Estimated bytes of a forward (``training``: forward and backward) at ``batch`` images."""
        per_image = (self.input_bytes + (_TRAINING_COPIES * self.total_bytes if training else
                                         _INFERENCE_COPIES * self.largest_bytes))
        return self.param_bytes * (3 if training else 1) + batch * per_image

    def max_batch(self, available: int, training: bool = False) -> int:
        """The largest batch whose estimate fits in ``available`` bytes (0 if none)."""
        one = self.needed(1, training) - self.param_bytes * (3 if training else 1)
        return max(0, (available - self.param_bytes * (3 if training else 1)) // max(one, 1))


def _bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_bytes(v) for v in value.values())
    return 0


def footprint(model: nn.Module, input_size: Sequence[int]) -> Footprint | None:
    """One image of ``input_size`` (C, H, W) through ``model`` on meta tensors: its :class:`Footprint`.

    Returns None when the model cannot run on meta tensors (an op without a meta kernel): nothing is known then.

    Raises:
        AssertionError: the model refuses the shape (timm asserts a fixed input size this way); the caller words it.
    """
    from torch.func import functional_call

    state = {name: t.to("meta") for name, t in chain(model.named_parameters(), model.named_buffers())}
    param_bytes = sum(_bytes(t) for t in state.values())
    x = torch.empty(1, *input_size, device="meta",
                    dtype=next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32))
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(_bytes(out))) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional_call(model, state, (x,), strict=False)
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - a missing meta kernel, a tensor kept outside the state: cannot estimate
        return None
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    leaves = sizes[:-1] or sizes  # the last hook is the whole model's output
    return Footprint(_bytes(x), max(leaves, default=0), sum(leaves), param_bytes)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (psutil if installed, else /proc/meminfo, else sysconf);
    None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size_text(input_size: Sequence[int]) -> str:
    return "x".join(str(v) for v in input_size)


def check_memory(model: nn.Module | None, input_size: Sequence[int], batches: Mapping[str, Sequence[int]], *,
                 what: str = "the model", training: bool = False, available: int | None = None) -> Footprint | None:
    """Refuse batch sizes whose estimated memory (see :class:`Footprint`) exceeds half of what is available (the
    estimate is rough, and other processes need memory too). ``batches``: the
    batch sizes of each option (``{"--batch-sizes": [1, 32]}``); with no ``model``, only the input images are counted
    (the option is then the one giving the input size).

    Raises:
        PfconvertError: a batch would not fit (the message names the largest batch that would).
        AssertionError: from :func:`footprint`, the model refuses the shape.
    """
    available = available if available is not None else available_memory()
    if model is None:
        c, h, w = input_size
        fp: Footprint | None = Footprint(c * h * w * 4, 0, 0, 0)
    else:
        fp = footprint(model, input_size)
    if fp is None or available is None:
        return fp
    budget = int(available * _SHARE)
    for option, batch in sorted(((o, b) for o, sizes in batches.items() for b in sizes), key=lambda ob: -ob[1]):
        need = fp.needed(batch, training)
        if need <= budget:
            break
        if model is None:
            raise PfconvertError(f"{option} {_size_text(input_size)}: one input image alone takes {human(need, 'B')}, "
                                 f"more than half of the {human(available, 'B')} of memory available; give a smaller "
                                 "size such as 3,224,224")
        fits = fp.max_batch(budget, training)
        fix = f"use at most {fits}" if fits else "use a smaller input size"
        raise PfconvertError(f"{option} {batch} at input {_size_text(input_size)} needs about {human(need, 'B')} for "
                             f"{what}'s {'training' if training else 'activations'}, more than half of the "
                             f"{human(available, 'B')} of memory available; {fix}")
    return fp


def check_input(model: nn.Module, input_size: Sequence[int], batches: Mapping[str, Sequence[int]] | None = None, *,
                what: str = "the model", fix: str = "", training: bool = False) -> Footprint | None:
    """:func:`check_memory`, with a size the model refuses turned into one line.

    Args:
        fix: how to give the model that size (e.g. ``pass --kwarg img_size=32``), appended to the refusal.

    Raises:
        ModelError: the model does not take ``input_size`` (a fixed-size model: its own assertion is quoted).
        PfconvertError: a batch would not fit in memory.
    """
    try:
        return check_memory(model, input_size, batches or {}, what=what, training=training)
    except AssertionError as exc:
        h, w = input_size[-2:]
        raise ModelError(f"{what} does not take a {h}x{w} input ({one_line(exc, 160)})"
                         + (f"; {fix}" if fix else "")) from None
