"""A model deployed on a CPU inference runtime, the way a user deploys it: ONNX Runtime or OpenVINO, fp32 or int8.

=============  ===============================================================================================
runtime        what runs
=============  ===============================================================================================
``ort``        ONNX Runtime, the ONNX export (fp32), all graph optimisations
``ort-int8``   ONNX Runtime, the export quantized by ``onnxruntime.quantization.quantize_static`` (QDQ, int8)
``ov``         OpenVINO CPU, the ONNX export converted by ``ov.convert_model`` (fp32)
``ov-int8``    OpenVINO CPU, that model quantized by ``nncf.quantize`` (int8)
=============  ===============================================================================================

:func:`build_runtime` does the slow part once per model (export, convert, quantize); :meth:`RuntimeModel.runner`
returns a numpy forward, for a fixed batch size (timing) or any (evaluation). :func:`deploy` wraps the result as an
``nn.Module`` (CPU tensors in, logits out), so the code that evaluates PyTorch models evaluates the deployed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ._deps import installed
from .quantize import Calibration, Validation, check_calibration, synthetic_calibration

__all__ = ["RUNTIMES", "RUNTIME_LABELS", "INT8_RUNTIMES", "is_int8", "runtime_available", "RuntimeModel",
           "build_runtime", "Deployed", "deploy", "check_runtimes"]

RUNTIME_LABELS = {"ort": "ONNX Runtime CPU fp32", "ort-int8": "ONNX Runtime CPU int8 (static QDQ)",
                  "ov": "OpenVINO CPU fp32", "ov-int8": "OpenVINO CPU int8 (NNCF PTQ)"}
RUNTIMES = tuple(RUNTIME_LABELS)
INT8_RUNTIMES = ("ort-int8", "ov-int8")


def is_int8(runtime: str) -> bool:
    """Whether ``runtime`` runs a quantized model (and needs calibration)."""
    return runtime in INT8_RUNTIMES


def runtime_available(runtime: str) -> bool:
    """Whether the packages ``runtime`` needs are installed (checked without importing them)."""
    needs = {"ort": ["onnxruntime"], "ort-int8": ["onnxruntime"], "ov": ["openvino"],
             "ov-int8": ["openvino", "nncf"]}[runtime]
    return all(installed(module) for module in needs)


@dataclass
class RuntimeModel:
    """A model prepared for a runtime: the ONNX bytes (ONNX Runtime) or the ``openvino.Model`` (OpenVINO), and what
    calibrated it when it is int8."""

    runtime: str
    payload: Any
    calibration: Calibration | None = None
    max_drop: float | None = None
    """Set when int8 was accuracy-controlled: the most top-1 points below fp32 it allowed."""

    @property
    def label(self) -> str:
        """``OpenVINO CPU int8 (NNCF PTQ)``..., with ``, accuracy-controlled to 0.5`` when it was."""
        label = RUNTIME_LABELS[self.runtime]
        return label if self.max_drop is None else f"{label}, accuracy-controlled to {self.max_drop:g}"

    def runner(self, threads: int | None = None, batch_size: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """A forward ``(N, C, H, W) float32 -> logits``; ``batch_size`` fixes the batch (OpenVINO compiles static
        shapes, faster), None accepts any."""
        if self.runtime.startswith("ort"):
            from .onnx import ort_session

            session = ort_session(self.payload, threads=threads)
            name = session.get_inputs()[0].name
            return lambda x: session.run(None, {name: x})[0]
        from .openvino import compile_openvino, model_precision

        compiled = compile_openvino(self.payload, threads=threads, batch_size=batch_size,
                                    precision=model_precision(is_int8(self.runtime)))
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x}, share_inputs=True)
            return request.get_output_tensor(0).data

        return run


def build_runtime(model: nn.Module, runtime: str, input_size: tuple[int, int, int],
                  calibration: Calibration | None = None, onnx_model: bytes | None = None, *,
                  max_drop: float | None = None, validation: Validation | None = None) -> RuntimeModel:
    """Export ``model`` (eval mode, restored) for ``runtime``, quantizing it when the runtime is int8.

    Args:
        model: The PyTorch model.
        runtime: One of :data:`RUNTIMES`.
        input_size: (C, H, W).
        calibration: int8 calibration inputs; None calibrates on :func:`synthetic_calibration` (the int8 accuracy
            is then unknown: :attr:`RuntimeModel.calibration` says so).
        onnx_model: The model's ONNX export with a dynamic batch, when the caller has it.
        max_drop: ``ov-int8``: accuracy-controlled quantization, at most this many top-1 points below fp32 on
            ``validation`` (:func:`pfconvert.deploy.openvino.quantize_openvino`); the other runtimes ignore it
            (ONNX Runtime has no accuracy-aware quantization).
        validation: Labelled images for ``max_drop``.

    Raises:
        ExportError: unknown runtime, a package missing, or the export / quantization fails.
    """
    if runtime not in RUNTIME_LABELS:
        raise ExportError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    from .onnx import export_onnx_bytes

    if is_int8(runtime):
        calibration = calibration if calibration is not None else synthetic_calibration(input_size)
        check_calibration(calibration, input_size)
    else:
        calibration = None
    if onnx_model is None:
        onnx_model = export_onnx_bytes(model, input_size, dynamic_batch=True)
    if runtime == "ort":
        return RuntimeModel(runtime, onnx_model)
    if runtime == "ort-int8":
        from .quantize import quantize_ort

        return RuntimeModel(runtime, quantize_ort(onnx_model, calibration), calibration)  # type: ignore[arg-type]
    from .openvino import quantize_openvino, to_openvino

    ov_model = to_openvino(model, input_size, onnx_model)
    if runtime == "ov-int8":
        ov_model = quantize_openvino(ov_model, calibration, max_drop=max_drop,  # type: ignore[arg-type]
                                     validation=validation)
    return RuntimeModel(runtime, ov_model, calibration, max_drop if runtime == "ov-int8" else None)


class Deployed(nn.Module):
    """A deployed model behind the ``nn.Module`` interface: ``forward`` sends the (CPU) batch to the runtime and
    returns its logits as a tensor. It has no parameters; ``train()`` / ``eval()`` change nothing."""

    def __init__(self, prepared: RuntimeModel, threads: int | None = None) -> None:
        super().__init__()
        self.prepared = prepared
        self._run = prepared.runner(threads)

    @property
    def label(self) -> str:
        """The runtime's label."""
        return self.prepared.label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(np.array(self._run(array), dtype=np.float32, copy=True)).to(x.device)


def deploy(model: nn.Module, runtime: str, input_size: tuple[int, int, int], calibration: Calibration | None = None,
           threads: int | None = None, *, max_drop: float | None = None,
           validation: Validation | None = None) -> Deployed:
    """``model`` deployed on ``runtime`` (see :func:`build_runtime`), callable like the PyTorch model."""
    return Deployed(build_runtime(model, runtime, input_size, calibration, max_drop=max_drop, validation=validation),
                    threads)


def check_runtimes(runtimes: Sequence[str], option: str = "--backend") -> list[str]:
    """``runtimes`` checked: each a known runtime whose packages are installed (blank names dropped).

    Raises:
        BackendError: an unknown name, or a package missing (the message names the extra to install).
    """
    from ..errors import BackendError
    from ._deps import require

    names = [name.strip() for name in runtimes if name.strip()]
    for name in names:
        if name not in RUNTIME_LABELS:
            raise BackendError(f"{option} {name!r}: choose from {', '.join(RUNTIMES)}")
    for name in names:
        require("onnxruntime" if name.startswith("ort") else "openvino", f"{option} {name}")
        if name == "ov-int8":
            require("nncf", f"{option} {name}")
    return names
