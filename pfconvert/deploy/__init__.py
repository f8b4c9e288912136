"""Deployment: fast CPU inference in PyTorch (:mod:`.methods`, the registry of deploy methods; :mod:`.cpu`, their
builders; :mod:`.fold`, graph-free transforms), ONNX export checked against PyTorch (:mod:`.onnx`), and the CPU
inference runtimes users deploy on: ONNX Runtime and OpenVINO, fp32 or int8 (:mod:`.runtime`, :mod:`.openvino`,
:mod:`.quantize`)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "optimize_for_cpu": ".cpu",
    "resolve_method": ".methods",
    "list_methods": ".methods",
    "get_method": ".methods",
    "register_method": ".methods",
    "DeployMethod": ".methods",
    "FusedGraph": ".cpu",
    "fold_batchnorm": ".fold",
    "use_fast_kernels": ".fold",
    "separate_pools": ".fold",
    "export_onnx": ".onnx",
    "check_onnx": ".onnx",
    "deploy": ".runtime",
    "build_runtime": ".runtime",
    "RUNTIMES": ".runtime",
    "export_openvino": ".openvino",
    "Calibration": ".quantize",
    "synthetic_calibration": ".quantize",
    "quantize_ort": ".quantize",
})
