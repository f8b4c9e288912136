"""Parameter and MAC counts with the counting convention stated.

MACs come from fvcore (``FlopCountAnalysis``), which counts one fused multiply-add as one "flop" (so its numbers are
MACs, as timm's benchmark labels them) and counts pooling as zero. fvcore has no handler for fused attention
(``scaled_dot_product_attention``); pfconvert adds one (Q K^T and the weighted sum of V). The aten ops the replacement
ops emit are counted as each op's registration says (:class:`pfconvert.ops.Count`): pooling as one comparison or
addition per window element, reported separately as ``pool_ops`` so that the MAC figure stays comparable with the
paper's (R50 4.1 G, R50-max 2.2 G, R50-hybrid 2.6 G).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConversionError, one_line
from ..graph.dataflow import probe_input
from ..graph.modules import count_params, eval_mode
from ..ops import Count, list_ops

__all__ = ["MacCount", "CONVENTION", "count_params", "count_macs", "op_handles"]

CONVENTION = ("MACs: fvcore convention (1 multiply-add = 1); pool ops: 1 per pooling-window element, "
              "counted apart (fvcore counts pooling as 0)")



@dataclass(frozen=True)
class MacCount:
    """MACs (fvcore convention), pooling operations, and the convention in words."""

    macs: int
    pool_ops: int
    convention: str = CONVENTION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _pool_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    out_shape = get_shape(outputs[0])
    kernel = inputs[1].toIValue()
    if kernel is None or (isinstance(kernel, (list, tuple)) and None in kernel):
        node = inputs[1].node()  # a prim::ListConstruct of constants
        kernel = [v.toIValue() for v in node.inputs()]
    kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel, kernel]
    if len(kernel) == 1:
        kernel = kernel * 2
    if any(k is None for k in kernel):
        return 0
    return math.prod(out_shape) * math.prod(kernel)


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """scaled_dot_product_attention: Q K^T and (softmax) V, one MAC per multiply-add (fvcore has no handler)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def _free_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


_HANDLES = {Count.POOL_WINDOW: _pool_handle, Count.FREE: _free_handle}


def op_handles() -> dict[str, Count]:
    """``{aten op: how it is counted}`` over every registered replacement op.

    Raises:
        ValueError: two ops declare the same aten op with different counts.
    """
    handles: dict[str, Count] = {}
    for op in list_ops():
        for aten, kind in op.counts.items():
            if handles.setdefault(aten, kind) is not kind:
                raise ValueError(f"op {op.name!r} counts {aten} as {kind.name}, another op as {handles[aten].name}")
    return handles


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> MacCount:
    """Count MACs and pooling ops of one forward at batch 1 (eval mode; the model's mode is restored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import touches deprecated torch.jit APIs
        from fvcore.nn import FlopCountAnalysis

    x = probe_input(model, (1, *input_size), seed=None)
    try:
        with eval_mode(model), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            counted = op_handles()
            for aten, kind in counted.items():
                analysis.set_op_handle(aten, _HANDLES[kind])
            analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle)
            by_op = analysis.by_operator()
    except Exception as exc:  # noqa: BLE001 - the traced forward failed: say which input, in one line
        raise ConversionError(f"counting MACs of {type(model).__name__} on input {(1, *input_size)} failed: "
                              f"{one_line(exc)} (pass the model's input size with --input-size C,H,W)") from None
    pools = {aten.removeprefix("aten::") for aten, kind in counted.items() if kind is Count.POOL_WINDOW}
    pool = sum(v for k, v in by_op.items() if k in pools or "pool2d" in k)  # fvcore's adaptive (global) pools too
    return MacCount(macs=int(sum(by_op.values()) - pool), pool_ops=int(pool))
