"""Dataflow analysis of a model by one traced forward pass (forward hooks; works for any eager ``nn.Module``).

For every module call it records the input/output tensors, so that for a candidate layer we know its input and output
shapes, the layer that directly consumes its output (its norm, then that norm's activation) and whether the output is
consumed elsewhere too. Hooks see module calls only; functional consumers (``x + shortcut``) are invisible, which is
why the absorbed chain must be module -> module with a single module consumer.

Alongside the module calls, a :class:`TensorGraph` records every torch function call of the forward (``F.conv2d``,
``x + shortcut``, ``torch.cat``...) as an edge from its input tensors to its output, each produced tensor being a new
node (an in-place op makes a new version of the same tensor). Module calls carry the nodes of their input and output,
and the additions of two same-shape tensors are kept as joins, from which :mod:`pfconvert.graph.residual` finds the
residual branches.

The forward runs on the ``meta`` device (:func:`meta_forward`: the model's parameters and buffers are swapped for
meta tensors of the same shapes for the call), so its cost does not grow with the input resolution: tracing
EfficientNet-B7 at 600 px takes a fraction of a second instead of seconds. A model whose forward cannot run on meta
tensors (data-dependent control flow, tensors kept outside parameters and buffers) is traced with real tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConversionError, one_line
from .modules import eval_mode, is_transparent

__all__ = ["Call", "Join", "TensorGraph", "Dataflow", "trace_dataflow", "run_forward", "meta_forward", "probe_input", "tensor_shapes"]


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
    input_node: int | None = None
    output_node: int | None = None


@dataclass(frozen=True)
class Join:
    """An addition of two tensors of the same shape (``x + shortcut``): where residual branches meet."""

    operands: tuple[int, int]
    output: int
    shape: tuple[int, ...]


@dataclass
class TensorGraph:
    """The tensors of one forward as nodes numbered in creation order, each with the nodes it was computed from.

    A tensor seen before any op produced it (the input, a parameter, a constant) is a leaf: no parents.
    """

    parents: list[tuple[int, ...]] = field(default_factory=list)
    joins: list[Join] = field(default_factory=list)
    leaves: set[int] = field(default_factory=set)

    def clear(self) -> None:
        """Forget everything (a traced forward that is started again)."""
        self.parents.clear()
        self.joins.clear()
        self.leaves.clear()


@dataclass
class Dataflow:
    """All module calls of one forward, in call order, plus the model's output shapes.

    A module called several times (a shared layer) has one :class:`Call` per call; ``by_path`` holds the first.
    """

    calls: list[Call]
    output_shapes: list[tuple[int, ...]]
    graph: TensorGraph = field(default_factory=TensorGraph)
    memo: dict[str, Any] = field(default_factory=dict, repr=False)  # analyses of this forward, computed once
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
    items = obj if isinstance(obj, (list, tuple)) else obj.values() if isinstance(obj, dict) else ()
    for item in items:
        t = _first_tensor(item)
        if t is not None:
            return t
    return None


def tensor_shapes(obj: object) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a (nested) output, in order."""
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


_SAME_SHAPE = {
    F.relu, F.relu6, F.hardtanh, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.selu,
    F.celu, F.softplus, F.sigmoid, F.tanh, torch.sigmoid, torch.tanh, torch.relu, torch.Tensor.relu,
    torch.Tensor.sigmoid, F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm,
}
"""Shape-preserving functions that return a new tensor, many of them slow Python references on meta tensors (not
dropout: in eval mode it returns its input, which the dataflow must see)."""
_IN_PLACE = {F.relu_, torch.relu_, torch.Tensor.relu_, torch.Tensor.sigmoid_, F.hardtanh_, F.elu_, F.leaky_relu_}
"""Their in-place forms: they return their input."""
_INPLACE_LAST = {F.relu, F.relu6, F.hardtanh, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
                 F.selu, F.celu}
"""Functions whose last positional parameter may be ``inplace``: called with it positionally, they run as they are."""
_BINARY = {torch.add, torch.mul, torch.sub, torch.div, torch.Tensor.add, torch.Tensor.mul, torch.Tensor.sub,
           torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__mul__, torch.Tensor.__rmul__,
           torch.Tensor.__sub__, torch.Tensor.__truediv__}
"""Broadcasting arithmetic: the result's shape and dtype follow from the operands'."""
_MEAN = {torch.mean, torch.Tensor.mean}
"""Means over dimensions (a squeeze-and-excitation's pooling), whose meta version is a slow Python reference."""
_BINARY_IN_PLACE = {torch.Tensor.add_, torch.Tensor.mul_, torch.Tensor.sub_, torch.Tensor.div_, torch.Tensor.__iadd__,
                    torch.Tensor.__imul__, torch.Tensor.__isub__, torch.Tensor.__itruediv__}


class _ShapeOnly(TorchFunctionMode):
    """On meta tensors, shape-preserving activations and norms return an empty tensor of their input's shape (or
    their input itself when they work in place), so that the dataflow sees the tensor identities of a real forward
    at a fraction of the cost."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        x = args[0] if args else kwargs.get("input")
        if isinstance(x, torch.Tensor) and x.is_meta:
            if func in _IN_PLACE or func in _BINARY_IN_PLACE or (func in _SAME_SHAPE and kwargs.get("inplace") is True):
                return x
            if func in _SAME_SHAPE and not (func in _INPLACE_LAST and len(args) > 1):
                return torch.empty_like(x)
            if func in _MEAN and len(args) + len(kwargs) > 1 and "dtype" not in kwargs and "out" not in kwargs:
                return torch.empty(_reduced(x.shape, *args[1:], **kwargs), dtype=x.dtype, device="meta")
            if func in _BINARY and len(args) == 2 and not kwargs.get("out"):
                other = args[1]
                if isinstance(other, torch.Tensor) and not other.is_meta and other.numel() != 1:
                    return func(*args, **kwargs)  # a real tensor operand: let torch say what it makes of it
                shape = torch.broadcast_shapes(x.shape, other.shape if isinstance(other, torch.Tensor) else ())
                return torch.empty(shape, dtype=torch.result_type(x, other), device="meta")
        return func(*args, **kwargs)


def _reduced(shape: torch.Size, dim: int | tuple[int, ...] | list[int] | None = None, keepdim: bool = False,
             **_: object) -> tuple[int, ...]:
    """The shape of a reduction of ``shape`` over ``dim`` (all dimensions when None)."""
    dims = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
    gone = {d % len(shape) for d in dims}
    return tuple(1 if i in gone else n for i, n in enumerate(shape) if keepdim or i not in gone)


_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.add_,
        torch.Tensor.__iadd__}
"""Additions: a residual join when both operands are tensors of the same shape."""


def _tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor in a (nested) argument or output, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class _Recorder(TorchFunctionMode):
    """Records each torch function call of a forward into a :class:`TensorGraph` (the tensors are kept alive, so
    that their ids stay unique for the whole forward)."""

    def __init__(self, graph: TensorGraph) -> None:
        super().__init__()
        self.graph = graph
        self.current: dict[int, int] = {}
        self.alive: list[torch.Tensor] = []

    def clear(self) -> None:
        """Start again (a second attempt at the forward)."""
        self.graph.clear()
        self.current.clear()
        self.alive.clear()

    def node(self, t: torch.Tensor) -> int:
        """The node of the current version of ``t`` (a new leaf when no op produced it)."""
        found = self.current.get(id(t))
        if found is None:
            found = self._new(t, ())
            self.graph.leaves.add(found)
        return found

    def _new(self, t: torch.Tensor, parents: tuple[int, ...]) -> int:
        self.graph.parents.append(parents)
        self.alive.append(t)
        self.current[id(t)] = len(self.graph.parents) - 1
        return self.current[id(t)]

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        produced = _tensors(out)
        if produced:
            inputs = _tensors(args) + _tensors(kwargs)
            parents = tuple(dict.fromkeys(self.node(t) for t in inputs))
            nodes = [self._new(t, parents) for t in produced]
            if func in _ADD and len(inputs) == 2 and len(parents) == 2 and inputs[0].shape == inputs[1].shape \
                    and inputs[0].numel() > 1:
                self.graph.joins.append(Join((parents[0], parents[1]), nodes[0], tuple(inputs[0].shape)))
        return out


def meta_forward(module: nn.Module, inputs: tuple[torch.Tensor, ...] | torch.Tensor,
                 modes: tuple[TorchFunctionMode, ...] = ()) -> Any:
    """Call ``module`` with its parameters and buffers (and ``inputs``) as meta tensors: shapes, no data, no compute.

    The module objects are the real ones (hooks on them fire); their own tensors are untouched. ``modes`` are entered
    inside the shape-only mode, so they see each call first.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    state = {name: t.to("meta") for name, t in chain(module.named_parameters(remove_duplicate=False),
                                                      module.named_buffers(remove_duplicate=False))}
    meta_args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    with _ShapeOnly(), ExitStack() as stack:
        for mode in modes:
            stack.enter_context(mode)
        return torch.func.functional_call(module, state, meta_args, strict=False, tie_weights=True)


def _forward(model: nn.Module, x: torch.Tensor, meta: bool, modes: tuple[TorchFunctionMode, ...]) -> Any:
    with eval_mode(model), torch.no_grad():
        if meta:
            return meta_forward(model, x, modes)
        with ExitStack() as stack:
            for mode in modes:
                stack.enter_context(mode)
            return model(x)


def run_forward(model: nn.Module, input_size: tuple[int, ...], meta: bool = True,
                reset: Callable[[], None] | None = None, modes: tuple[TorchFunctionMode, ...] = ()) -> object:
    """One eval-mode forward at batch 1 (train/eval flags restored): on meta tensors when it can, else on a random
    input (``reset`` is called before that second attempt). ``modes`` (torch function modes) are active during the
    forward.

    Raises:
        ConversionError: the forward fails (the message names the model and input size).
    """
    x = probe_input(model, (1, *input_size))
    if meta:
        try:
            return _forward(model, x, True, modes)
        except Exception:  # noqa: BLE001 - anything meta tensors cannot do: run it for real below
            if reset is not None:
                reset()
    try:
        return _forward(model, x, False, modes)
    except Exception as exc:  # noqa: BLE001 - report which model/input failed, in one line
        raise ConversionError(f"forward pass of {type(model).__name__} on input {(1, *input_size)} failed: "
                              f"{one_line(exc)} (check the input size, --input-size C,H,W, and any --kwarg values)") from None


def trace_dataflow(model: nn.Module, input_size: tuple[int, ...], meta: bool = True) -> Dataflow:
    """Run one forward with hooks on every module and return the calls in order (see the module docstring)."""
    calls: list[Call] = []
    keep_alive: list[torch.Tensor] = []  # ids stay unique only while the tensors live
    pending: dict[int, list[Call]] = {}
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    graph = TensorGraph()
    recorder = _Recorder(graph)

    def reset() -> None:
        calls.clear()
        keep_alive.clear()
        pending.clear()
        recorder.clear()

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is model:
            return
        t = _first_tensor(args) if args else _first_tensor(kwargs)  # the input may be passed by keyword
        if t is not None:
            keep_alive.append(t)
        call = Call(len(calls), names.get(module, "?"), module, id(t) if t is not None else None,
                    tuple(t.shape) if t is not None else None, input_node=recorder.node(t) if t is not None else None)
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
            call.output_node = recorder.node(t)

    output = _with_hooks(names, pre_hook, post_hook, lambda: run_forward(model, input_size, meta, reset, (recorder,)))
    return Dataflow(calls=calls, output_shapes=tensor_shapes(output), graph=graph)


def _with_hooks(modules: dict[nn.Module, str], pre: Callable, post: Callable, run: Callable[[], object]) -> object:
    handles = []
    for module in modules:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post))
    try:
        return run()
    finally:
        for h in handles:
            h.remove()
