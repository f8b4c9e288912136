"""Module-level helpers shared by tracing, conversion and deployment: kinds of layers, swapping submodules,
counting parameters, eval mode for a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["is_norm", "is_activation", "is_transparent", "module_aliases", "set_module", "count_params",
           "eval_mode", "non_finite", "non_finite_weights"]

_ACT_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.PReLU,
    nn.SELU, nn.CELU, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus,
)


def is_norm(module: nn.Module) -> bool:
    """BatchNorm (incl. timm's BatchNormAct2d / FrozenBatchNorm2d), GroupNorm or LayerNorm variants."""
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
        return True
    return "Norm" in type(module).__name__ and type(module).__module__.startswith("timm.")


def is_activation(module: nn.Module) -> bool:
    """An activation module (torch's or timm's ``timm.layers.activations*``)."""
    return isinstance(module, _ACT_TYPES) or type(module).__module__.startswith("timm.layers.activations")


def is_transparent(module: nn.Module) -> bool:
    """Modules that pass their input through at inference (Identity, Dropout, DropPath, DropBlock)."""
    name = type(module).__name__
    return isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)) or name in ("DropPath", "DropBlock2d")


def module_aliases(root: nn.Module) -> dict[int, list[str]]:
    """``{id(module): every path it is registered under}`` (a module shared by two parents has two paths)."""
    aliases: dict[int, list[str]] = {}
    for name, module in root.named_modules(remove_duplicate=False):
        if name:
            aliases.setdefault(id(module), []).append(name)
    return aliases


def set_module(root: nn.Module, path: str, new: nn.Module, aliases: dict[int, list[str]] | None = None) -> None:
    """Put ``new`` at ``path`` of ``root`` and at every other name the same module object is registered under
    (a module shared by two parents is replaced in both). ``aliases`` (:func:`module_aliases`, taken before any
    change) saves a walk over the whole model per call."""
    old = root.get_submodule(path)
    found = aliases.get(id(old)) if aliases is not None else module_aliases(root).get(id(old))
    for each in sorted({path, *(found or [])}):
        parent_path, _, name = each.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        setattr(parent, name, new)


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters and BatchNorm statistics that hold a NaN or an infinity (other buffers, such
    as attention masks, may hold infinities on purpose)."""
    state = dict(model.named_parameters())
    state.update((n, b) for n, b in model.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
    return non_finite(state)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block, then restore each module's own train/eval flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag
