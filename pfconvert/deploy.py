"""Deploy-time transforms that make a model fast for CPU inference in PyTorch.

Why this exists: a converted model run eagerly is often *slower* than the original on a CPU. aten's CPU
``max_pool2d`` always computes the argmax indices (it is ``max_pool2d_with_indices`` with the indices thrown away) and
runs 5-50x slower than oneDNN's depthwise convolution, so replacing depthwise convs with max-pools buys nothing until
the pools run on a kernel that computes only the max. :class:`FastMaxPool2d` (the pool :func:`pfconvert.convert`
builds) does in eager mode (:mod:`pfconvert.native`'s C kernel, else oneDNN); the paths here do in a frozen graph,
and they fold BatchNorm into the preceding convolutions. They apply to the original and the converted model alike:
compare both through the same path.

What to expect (this project's 2-core Xeon; ``benchmarks/deploy_paths.py``, ``benchmarks/speed.py``): the graph
paths make *both* models 1.5-4x faster than ``eager``. Against its original through the same path, a ResNet-50 with
max-pool bottlenecks is 1.5-1.7x faster. A MobileNetV2/EfficientNet-Lite with max-pools instead of depthwise convs
gains little or loses (``llga``, batch 32: 0.65-0.79x): a max-pool, like the depthwise conv it replaces, is one
memory-bound pass over the expanded tensor, and oneDNN Graph fuses the original's depthwise conv into the 1x1 conv
before it, which no library does for a pool.

Paths (``method``):

- ``llga``: ``torch.jit.trace`` + ``freeze`` run with oneDNN Graph fusion (``torch.jit.enable_onednn_fusion``): BN
  folded, convolutions fused with their activations and residual adds (and a 1x1 conv with the depthwise conv after
  it), pools and convolutions in oneDNN. The fastest path measured here for every model tried (originals 1.2-1.7x
  faster than through ``jit``, converted models 1.04-1.75x). The fusion switch is process-global in PyTorch; the
  returned module turns it on for its own calls only. Warm-up runs at build time let the profiling executor fuse for
  the example's shape; another shape runs unfused until the executor has re-profiled it.
- ``jit``: ``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``: BN folded, the graph run in oneDNN's
  blocked layout with oneDNN convolutions and oneDNN pooling, activations as separate passes. Builds in about a
  second. TorchScript is deprecated since PyTorch 2.10 (still present in 2.14); its warnings are silenced here.
- ``compile``: ``torch.compile`` with Inductor's freezing (weights constant-folded, oneDNN convolutions with fused
  activations) and its own vectorised C++ pooling kernels, specialised per input shape. Needs a C++ compiler;
  compiling takes 10-60 s per model and shape (done by :func:`optimize_for_cpu` on the example input). The path that
  outlives TorchScript, but not yet a good one for max-pool conversions: on the earlier 2-core EPYC, through this
  path, efficientnet_lite0 + maxpool was 0.94x its original's speed (batch 1 and 32) and mobilenetv2_100 + maxpool
  0.70x (batch 1) and 0.43x (batch 32), while the ``identity`` rule was 1.14-1.41x faster: Inductor's pooling kernels
  are the slow part (``python benchmarks/speed.py --models efficientnet_lite0,mobilenetv2_100 --backends cpu --deploy
  compile``).
- ``eager``: no graph capture: BN folded into convs (:func:`fold_batchnorm`) and ``nn.MaxPool2d`` swapped for
  :class:`FastMaxPool2d` (native or oneDNN pooling). Works everywhere; slower than the graph paths.
- ``auto``: ``llga`` where TorchScript and oneDNN Graph exist (falling back to ``jit``, with a warning, for a model
  the fusion pass fails on), else ``jit``, else ``compile`` where a C++ compiler exists, else ``eager``.

The deployed model computes what the eager model computes (up to float rounding from the folding): see
``tests/test_deploy.py``. It is for inference only.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import warnings
from typing import Callable, Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import native
from .errors import PfconvertError

__all__ = ["METHODS", "FastMaxPool2d", "FusedGraph", "fold_batchnorm", "use_fast_pools", "separate_pools",
           "optimize_for_cpu", "onednn_fusion", "resolve_method"]

METHODS = ("auto", "llga", "jit", "compile", "eager")


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that, in CPU float32 inference, computes only the max (no argmax indices).

    Same parameters and state as ``nn.MaxPool2d``. Two kernels, the first available: :mod:`pfconvert.native` (a C
    kernel built on first use, in the input's own layout, no copies), else oneDNN's pooling (two layout copies). Both
    are exact. It is exactly ``nn.MaxPool2d`` with autograd on, on other devices or dtypes, for
    ``return_indices=True``, and while being traced, scripted, compiled or exported (so those see a plain
    ``max_pool2d``). aten's CPU kernel, which always computes the indices, is 4-20x slower than either
    (``benchmarks/pool_kernels.py``).
    """

    def _inference_cpu(self, x: torch.Tensor) -> bool:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        if torch.compiler.is_compiling() or isinstance(x, fx.Proxy):
            return False
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not self.return_indices
                and not (torch.is_grad_enabled() and x.requires_grad))

    def _use_onednn(self, x: torch.Tensor) -> bool:
        dilation = self.dilation if isinstance(self.dilation, (tuple, list)) else (self.dilation,)
        return all(d == 1 for d in dilation) and torch.backends.mkldnn.is_available()  # oneDNN has no dilation

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.MaxPool2d's argument name
        if not self._inference_cpu(input):
            return super().forward(input)
        if native.supports(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode) and \
                native.library() is not None:
            return native.max_pool2d(input, self.kernel_size, self.stride, self.padding)
        if not self._use_onednn(input):
            return super().forward(input)
        out = F.max_pool2d(input.contiguous().to_mkldnn(), self.kernel_size, self.stride, self.padding, self.dilation,
                           self.ceil_mode)
        return out.to_dense()

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> "FastMaxPool2d":
        """The fast twin of a plain ``nn.MaxPool2d``."""
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode)


class _ChannelsLastInput(nn.Module):
    """Runs the wrapped model on a channels_last copy of its input (the layout its weights were converted to)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def use_fast_pools(model: nn.Module) -> int:
    """Swap every plain ``nn.MaxPool2d`` of ``model`` (in place) for :class:`FastMaxPool2d`; returns the count."""
    paths = [name for name, m in model.named_modules() if type(m) is nn.MaxPool2d and name]
    for path in paths:
        _set_module(model, path, FastMaxPool2d.from_pool(model.get_submodule(path)))
    return len(paths)


def _separable(pool: nn.MaxPool2d) -> nn.Module | None:
    """``k x k`` max-pool as ``k x 1`` then ``1 x k`` (exact: a max over a rectangle is a max of row maxima)."""
    k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (pool.kernel_size, pool.stride, pool.padding,
                                                                   pool.dilation))
    if pool.ceil_mode or pool.return_indices or d != (1, 1) or k[0] != k[1] or k[0] < 5:
        return None
    return nn.Sequential(nn.MaxPool2d((k[0], 1), (s[0], 1), (p[0], 0)), nn.MaxPool2d((1, k[1]), (1, s[1]), (0, p[1])))


def separate_pools(model: nn.Module) -> int:
    """Rewrite every plain ``nn.MaxPool2d`` with a 5x5 or larger window (in place) as two 1-D pools.

    Exact, and 1.5-2x faster in compiled CPU code (10 loads per output instead of 25 for 5x5); 3x3 pools are left
    whole, where the 2-D kernel is faster. Returns the number of pools rewritten.
    """
    done = 0
    for path in [name for name, m in model.named_modules() if type(m) is nn.MaxPool2d and name]:
        new = _separable(model.get_submodule(path))
        if new is not None:
            _set_module(model, path, new)
            done += 1
    return done


class _LeafTracer(fx.Tracer):
    """FX tracer that keeps convs, norms and timm's untraceable layers as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from timm.layers import BatchNormAct2d
        from timm.layers._fx import get_notrace_modules

        leaves = (nn.Conv2d, nn.BatchNorm2d, BatchNormAct2d, nn.MaxPool2d, *get_notrace_modules())
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing ``bn(conv(x))`` in eval mode."""
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(
        bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore
                      conv.dilation, conv.groups, True, conv.padding_mode, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + shift)
    return fused


def _norm_rest(bn: nn.Module) -> nn.Module:
    """What remains of a norm layer once its affine part is folded: timm ``BatchNormAct2d`` keeps drop + act."""
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    rest = [m for m in (drop, act) if m is not None and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """Fold every eval-mode BatchNorm that directly follows a plain ``nn.Conv2d`` into that conv.

    The graph is read with FX (timm's untraceable layers kept whole) to find conv -> BN pairs by dataflow, and the
    modules are swapped on the original ``nn.Module`` (its class and methods survive). A conv whose output also
    feeds something else, a BN with ``track_running_stats=False``, and subclasses of Conv2d (timm ``Conv2dSame``)
    are left alone. timm ``BatchNormAct2d`` keeps its activation.

    Args:
        model: The model; must be in eval mode (running statistics are what gets folded).
        inplace: Modify ``model`` instead of a deep copy.

    Returns:
        The folded model and the number of BN layers folded. A model FX cannot trace is returned unchanged (0).
    """
    if model.training:
        raise PfconvertError("fold_batchnorm needs a model in eval mode (call model.eval() first): training-mode "
                             "BatchNorm uses batch statistics, which cannot be folded")
    model = model if inplace else copy.deepcopy(model)
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - FX raises many types on untraceable code; folding is an optimisation
        return model, 0
    modules = dict(model.named_modules())
    folded = 0
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = modules.get(src.target)  # type: ignore[arg-type]
        if type(conv) is not nn.Conv2d:
            continue
        _set_module(model, str(src.target), _fold(conv, bn))
        _set_module(model, str(node.target), _norm_rest(bn))
        folded += 1
    return model, folded


def _has_cxx() -> bool:
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def _has_llga() -> bool:
    return hasattr(torch.jit, "enable_onednn_fusion") and hasattr(torch.jit, "onednn_fusion_enabled") and \
        torch.backends.mkldnn.is_available()


def resolve_method(method: str = "auto") -> str:
    """The concrete path ``auto`` stands for on this machine (see the module docstring)."""
    if method not in METHODS:
        raise PfconvertError(f"unknown deploy method {method!r}; choose from {', '.join(METHODS)}")
    if method != "auto":
        return method
    if all(hasattr(torch.jit, name) for name in ("trace", "freeze", "optimize_for_inference")):
        return "llga" if _has_llga() else "jit"
    return "compile" if _has_cxx() else "eager"


@contextlib.contextmanager
def onednn_fusion(enabled: bool = True) -> Iterator[None]:
    """Set PyTorch's process-global oneDNN Graph fusion switch for the block, then restore it."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(enabled)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


class FusedGraph(nn.Module):
    """A frozen TorchScript graph that runs with oneDNN Graph fusion on (for its own calls only)."""

    def __init__(self, graph: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with onednn_fusion(True):
            return self.graph(x)


def _eager(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    model, _ = fold_batchnorm(model, inplace=True)
    use_fast_pools(model)
    return model


def _jit(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation and tracer warnings
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _llga(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings(), torch.no_grad(), onednn_fusion(True):
        warnings.simplefilter("ignore")  # TorchScript deprecation and tracer warnings
        frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        for _ in range(3):  # the profiling executor records shapes, then fuses and compiles the partitions
            frozen(example)
    return FusedGraph(frozen)


def _compile(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    model, _ = fold_batchnorm(model, inplace=True)
    separate_pools(model)
    compiled = torch.compile(model, dynamic=False, options={"freezing": True})
    with torch.no_grad():
        compiled(example)  # compile now, for this shape, not at the first timed call
    return compiled


def optimize_for_cpu(model: nn.Module, example: torch.Tensor, *, method: str = "auto",
                     channels_last: bool | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fast CPU-inference version of ``model`` (a copy; ``model`` is not modified).

    Args:
        model: The model (any mode; the copy is put in eval mode).
        example: An input of the shape that will be used (``compile`` specialises to it and compiles now; other
            shapes recompile on first use).
        method: ``auto``, ``llga``, ``jit``, ``compile`` or ``eager`` (see the module docstring).
        channels_last: Run in NHWC memory layout; None = yes for ``jit``/``compile``, no for ``llga`` (no difference
            measured) and ``eager`` (whose pools and convolutions are faster in NCHW there).

    Returns:
        A callable ``f(x) -> output`` (an ``nn.Module`` or TorchScript module); call it under
        ``torch.inference_mode()`` or ``torch.no_grad()``, with inputs of the example's shape for full speed.

    Raises:
        PfconvertError: the chosen method failed on this model (the message names it; ``--deploy eager`` always
            works).

    Example:
        >>> fast = optimize_for_cpu(model, torch.randn(1, 3, 224, 224))
        >>> with torch.inference_mode():
        ...     y = fast(x)
    """
    chosen = resolve_method(method)
    try:
        return _build(model, example, chosen, channels_last)
    except PfconvertError as exc:
        if method != "auto" or chosen != "llga":
            raise
        cause = exc.__cause__
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}" if cause else exc
        warnings.warn(f"deploying {type(model).__name__} with method 'llga' (oneDNN Graph fusion) failed ({reason}); "
                      "using method 'jit'", RuntimeWarning, stacklevel=2)
        return _build(model, example, "jit", channels_last)


def _build(model: nn.Module, example: torch.Tensor, chosen: str,
           channels_last: bool | None) -> Callable[[torch.Tensor], torch.Tensor]:
    deployed = copy.deepcopy(model).eval().cpu()
    example = example.cpu()
    if channels_last or (channels_last is None and chosen in ("jit", "compile")):
        deployed = _ChannelsLastInput(deployed).eval()
    build = {"compile": _compile, "jit": _jit, "llga": _llga, "eager": _eager}[chosen]
    try:
        return build(deployed, example)
    except PfconvertError:
        raise
    except Exception as exc:  # noqa: BLE001 - compilers raise many types; report which path failed
        raise PfconvertError(f"deploying {type(model).__name__} with method '{chosen}' failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} "
                             "(try method 'jit' or 'eager')") from exc
