"""``FastMaxPool2d``: ``nn.MaxPool2d`` that computes only the max in CPU inference (the pool every conversion builds)."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import native

__all__ = ["FastMaxPool2d"]


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that, in CPU float32 inference, computes only the max (no argmax indices).

    Same parameters and state as ``nn.MaxPool2d``. Two kernels, the first available: :mod:`pfconvert.ops.kernels.native` (a C
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
