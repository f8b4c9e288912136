"""Dataflow analysis of a model by one traced forward pass (forward hooks; works for any eager ``nn.Module``).

For every module call it records the input/output tensors, so that for a candidate layer we know its input and output
shapes, the layer that directly consumes its output (its norm, then that norm's activation) and whether the output is
consumed elsewhere too. Hooks see module calls only; functional consumers (``x + shortcut``) are invisible, which is
why the absorbed chain must be module -> module with a single module consumer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ConversionError

__all__ = [
    "Call", "Dataflow", "trace_dataflow", "run_forward", "tensor_shapes", "is_norm", "is_activation", "is_transparent",
]

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


@dataclass
class Call:
    """One module call seen during the traced forward."""

    index: int
    path: str
    module: nn.Module
    input_id: int | None
    input_shape: tuple[int, ...] | None
    output_id: int | None = None
    output_shape: tuple[int, ...] | None = None


@dataclass
class Dataflow:
    """All module calls of one forward, in call order, plus the model's output shapes.

    A module called several times (a shared layer) has one :class:`Call` per call; ``by_path`` holds the first.
    """

    calls: list[Call]
    output_shapes: list[tuple[int, ...]]
    by_path: dict[str, Call] = field(default_factory=dict)
    all_by_path: dict[str, list[Call]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for call in self.calls:
            self.by_path.setdefault(call.path, call)
            self.all_by_path.setdefault(call.path, []).append(call)

    def calls_of(self, path: str) -> list[Call]:
        """Every call of the module at ``path``, in call order."""
        return self.all_by_path.get(path, [])

    def consumers(self, producer: Call) -> list[Call]:
        """Module calls after ``producer`` whose first input is its output, outside ``producer`` itself.

        Transparent modules (Identity, Dropout...) are looked through: their consumers count instead.
        """
        target = producer.output_id
        found: list[Call] = []
        inside = producer.path + "."
        for call in self.calls[producer.index + 1:]:
            if call.input_id != target or call.path.startswith(inside):
                continue
            if is_transparent(call.module) and call.output_id == target:
                continue
            found.append(call)
            if call.output_id == target:  # an in-place op: later readers of the tensor are its consumers
                break
        return _outermost(found)


def _outermost(calls: list[Call]) -> list[Call]:
    """Drop calls nested inside another call of the list (a container and its first child share the input)."""
    paths = [c.path for c in calls]
    return [c for c in calls if not any(c.path.startswith(p + ".") for p in paths if p != c.path)]


def _first_tensor(obj: object) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for item in obj.values():
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def tensor_shapes(obj: object) -> list[tuple[int, ...]]:
    if isinstance(obj, torch.Tensor):
        return [tuple(obj.shape)]
    if isinstance(obj, (list, tuple)):
        return [s for item in obj for s in tensor_shapes(item)]
    if isinstance(obj, dict):
        return [s for item in obj.values() for s in tensor_shapes(item)]
    return []


def probe_input(module: nn.Module, shape: tuple[int, ...], seed: int | None = 0) -> torch.Tensor:
    """A probe tensor on ``module``'s parameter device and float dtype: seeded random, or zeros when ``seed`` is None."""
    ref = next(iter(module.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if seed is None:
        return torch.zeros(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)


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


def run_forward(model: nn.Module, input_size: tuple[int, ...]) -> object:
    """One eval-mode forward on a random input; the model's train/eval flags are restored afterwards."""
    try:
        with eval_mode(model), torch.no_grad():
            return model(probe_input(model, (1, *input_size)))
    except Exception as exc:  # noqa: BLE001 - report which model/input failed, in one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"forward pass of {type(model).__name__} on input {(1, *input_size)} failed: "
                              f"{msg[:300]} (pass the model's input size with --input-size C,H,W)") from None


def trace_dataflow(model: nn.Module, input_size: tuple[int, ...]) -> Dataflow:
    """Run one forward with hooks on every module and return the calls in order."""
    calls: list[Call] = []
    keep_alive: list[torch.Tensor] = []  # ids stay unique only while the tensors live
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    handles = []
    pending: dict[int, list[Call]] = {}

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is model:
            return
        t = _first_tensor(args) if args else _first_tensor(kwargs)  # the input may be passed by keyword
        if t is not None:
            keep_alive.append(t)
        call = Call(len(calls), names.get(module, "?"), module, id(t) if t is not None else None,
                    tuple(t.shape) if t is not None else None)
        calls.append(call)
        pending.setdefault(id(module), []).append(call)

    def post_hook(module: nn.Module, args: tuple, output: object) -> None:
        stack = pending.get(id(module))
        if not stack:
            return
        call = stack.pop()
        t = _first_tensor(output)
        if t is not None:
            keep_alive.append(t)
            call.output_id, call.output_shape = id(t), tuple(t.shape)

    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook))
    try:
        output = run_forward(model, input_size)
    finally:
        for h in handles:
            h.remove()
    return Dataflow(calls=calls, output_shapes=tensor_shapes(output))
