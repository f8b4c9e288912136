"""Deploy-time transforms that make a model fast for CPU inference in PyTorch.

Why this exists: a converted model run eagerly is often *slower* than the original on a CPU. aten's CPU
``max_pool2d`` always computes the argmax indices (it is ``max_pool2d_with_indices`` with the indices thrown away) and
runs 5-50x slower than oneDNN's depthwise convolution, so replacing depthwise convs with max-pools buys nothing until
the pools run on a kernel that computes only the max. :class:`~pfconvert.ops.kernels.FastMaxPool2d` (the pool
:func:`pfconvert.convert` builds) does in eager mode (a native C kernel, else oneDNN); the paths here do in a frozen graph,
and they fold BatchNorm into the preceding convolutions. They apply to the original and the converted model alike:
compare both through the same path.

What to expect (this project's 2-core Xeon; ``benchmarks/deploy_paths.py``, ``benchmarks/speed.py``): the graph
paths make *both* models 1.5-4x faster than ``eager``. Against its original through the same path, a ResNet-50 with
max-pool bottlenecks is 1.5-1.7x faster. A MobileNetV2/EfficientNet-Lite with max-pools instead of depthwise convs
gains little or loses (``llga``, batch 32: 0.65-0.79x): a max-pool, like the depthwise conv it replaces, is one
memory-bound pass over the expanded tensor, and oneDNN Graph fuses the original's depthwise conv into the 1x1 conv
before it, which no library does for a pool.

Paths (``method``; a registry: :func:`register_method`, :func:`list_methods`):

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
  the ops' fast kernels (:func:`~pfconvert.deploy.fold.use_fast_kernels`). Works everywhere; slower than the graph paths.
- ``auto``: ``llga`` where TorchScript and oneDNN Graph exist (falling back to ``jit``, with a warning, for a model
  the fusion pass fails on), else ``jit``, else ``compile`` where a C++ compiler exists, else ``eager``.

The deployed model computes what the eager model computes (up to float rounding from the folding): see
``tests/integration/test_deploy.py``. It is for inference only.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import PfconvertError, one_line
from .fold import fold_batchnorm, separate_pools, use_fast_kernels
from .methods import get_method, resolve_method

__all__ = ["optimize_for_cpu", "DeployedModel", "onednn_fusion", "FusedGraph"]

Deployed = Callable[[torch.Tensor], torch.Tensor]


def has_cxx() -> bool:
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def has_torchscript() -> bool:
    return all(hasattr(torch.jit, name) for name in ("trace", "freeze", "optimize_for_inference"))


def has_llga() -> bool:
    return has_torchscript() and hasattr(torch.jit, "enable_onednn_fusion") and \
        hasattr(torch.jit, "onednn_fusion_enabled") and torch.backends.mkldnn.is_available()


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


class _ChannelsLastInput(nn.Module):
    """Runs the wrapped model on a channels_last copy of its input (the layout its weights were converted to)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def build_eager(model: nn.Module, example: torch.Tensor) -> Deployed:
    model, _ = fold_batchnorm(model, inplace=True)
    use_fast_kernels(model)
    return model


def build_jit(model: nn.Module, example: torch.Tensor) -> Deployed:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation and tracer warnings
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def build_llga(model: nn.Module, example: torch.Tensor) -> Deployed:
    with warnings.catch_warnings(), torch.no_grad(), onednn_fusion(True):
        warnings.simplefilter("ignore")  # TorchScript deprecation and tracer warnings
        frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        for _ in range(3):  # the profiling executor records shapes, then fuses and compiles the partitions
            frozen(example)
    return FusedGraph(frozen)


def build_compile(model: nn.Module, example: torch.Tensor) -> Deployed:
    model, _ = fold_batchnorm(model, inplace=True)
    separate_pools(model)
    compiled = torch.compile(model, dynamic=False, options={"freezing": True})
    with torch.no_grad():
        compiled(example)  # compile now, for this shape, not at the first timed call
    return compiled


class DeployedModel(nn.Module):
    """What :func:`optimize_for_cpu` returns: the deployed callable and the method that built it (``method``: after
    a fallback, the one actually used)."""

    def __init__(self, inner: Deployed, method: str) -> None:
        super().__init__()
        self.inner = inner
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def optimize_for_cpu(model: nn.Module, example: torch.Tensor, *, method: str = "auto",
                     channels_last: bool | None = None) -> DeployedModel:
    """A fast CPU-inference version of ``model`` (a copy; ``model`` is not modified).

    Args:
        model: The model (any mode; the copy is put in eval mode).
        example: An input of the shape that will be used (``compile`` specialises to it and compiles now; other
            shapes recompile on first use).
        method: ``auto`` or a registered method (:func:`list_methods`; see the module docstring).
        channels_last: Run in NHWC memory layout; None = the method's default (yes for ``jit``/``compile``, no for
            ``llga``, where no difference was measured, and ``eager``, whose pools and convolutions are faster in
            NCHW here).

    Returns:
        A :class:`DeployedModel`, ``f(x) -> output`` (``f.method`` names the method used); call it under
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
        return DeployedModel(_build(model, example, chosen, channels_last), chosen)
    except PfconvertError as exc:
        if method != "auto" or chosen != "llga":
            raise
        cause = exc.__cause__
        reason = f"{type(cause).__name__}: {one_line(cause, 200)}" if cause is not None else str(exc)
        warnings.warn(f"deploying {type(model).__name__} with method 'llga' (oneDNN Graph fusion) failed ({reason}); "
                      "using method 'jit'", RuntimeWarning, stacklevel=2)
        return DeployedModel(_build(model, example, "jit", channels_last), "jit")


def _build(model: nn.Module, example: torch.Tensor, chosen: str, channels_last: bool | None) -> Deployed:
    spec = get_method(chosen)
    if not spec.is_available():
        raise PfconvertError(f"deploy method {chosen!r} is not available on this machine ({spec.summary})")
    deployed = copy.deepcopy(model).eval().cpu()
    example = example.cpu()
    if channels_last or (channels_last is None and spec.channels_last):
        deployed = _ChannelsLastInput(deployed).eval()
    try:
        return spec.build(deployed, example)
    except PfconvertError:
        raise
    except Exception as exc:  # noqa: BLE001 - compilers raise many types; report which path failed
        raise PfconvertError(f"deploying {type(model).__name__} with method '{chosen}' failed: "
                             f"{type(exc).__name__}: {one_line(exc, 200)} (try method 'jit' or 'eager')") from exc
