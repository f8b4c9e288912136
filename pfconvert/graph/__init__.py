"""Tracing and matching: one forward with hooks gives the dataflow (:mod:`.dataflow`), the rules' predicates pick the
layers to replace from it (:mod:`.match`), and :mod:`.geometry` describes a conv as a typed record."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Call": ".dataflow",
    "Dataflow": ".dataflow",
    "trace_dataflow": ".dataflow",
    "run_forward": ".dataflow",
    "meta_forward": ".dataflow",
    "probe_input": ".dataflow",
    "tensor_shapes": ".dataflow",
    "ConvGeometry": ".geometry",
    "conv_geometry": ".geometry",
    "axes_text": ".geometry",
    "Match": ".match",
    "Site": ".match",
    "find_matches": ".match",
    "stage_block": ".match",
    "block_path": ".match",
    "count_params": ".modules",
    "eval_mode": ".modules",
    "set_module": ".modules",
})
