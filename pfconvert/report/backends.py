"""The registry of latency backends: a name, a label and a description per way of running a model, with the code that
prepares a model for it imported on first use (listing the backends, as the command line's help does, imports no
torch). The preparing code is in :mod:`pfconvert.report.latency`.

Backends (``list_backends()``; the CUDA ones only where a GPU exists):

- ``cpu``: PyTorch on the CPU through :func:`pfconvert.deploy.optimize_for_cpu` (BN folded, frozen, oneDNN kernels,
  oneDNN Graph fusion where PyTorch has it), built for each batch size; the path to deploy a model with in PyTorch,
  applied to the original and the converted model alike.
- ``cpu-eager``: PyTorch eager on the CPU, the model as it is (NCHW, BN unfused): what a plain ``model(x)`` costs (a
  converted model's max-pools compute only the max).
- ``ort``: ONNX Runtime CPU, the model exported by :func:`pfconvert.deploy.export_onnx`, all graph optimisations.
- ``ort-int8``: the same, the export quantized by ONNX Runtime's static QDQ quantization (int8).
- ``ov`` / ``ov-int8``: OpenVINO CPU, the ONNX export converted by OpenVINO (fp32), or quantized by NNCF (int8);
  needs ``pip install 'pfconvert[openvino]'``. See :mod:`pfconvert.deploy.runtime`.

The int8 backends calibrate on :attr:`pfconvert.report.latency.LatencyConfig.calibration` (random inputs when
none is given); they are timed when asked for (``default_backends(int8=True)``), not by default.
- ``cuda`` / ``cuda-amp``: PyTorch eager on the GPU in float32 / under ``torch.autocast(float16)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError

__all__ = ["Runner", "Backend", "register_backend", "get_backend", "backend_label", "list_backends",
           "default_backends", "is_int8"]

Runner = Callable[[], object]
"""One synchronised forward on a prepared input."""


@dataclass(frozen=True)
class Backend:
    """A way of running a model: how to prepare a runner for it, and whether this machine has it.

    ``prepare(model, batch_size, config, cache)`` returns a :data:`Runner`. ``cache`` is a dict kept per model and
    backend across batch sizes (an exported ONNX session, a deployed module...).
    """

    name: str
    label: str
    device: str
    prepare: Callable[[Any, int, Any, dict[str, Any]], Runner]
    is_available: Callable[[], bool] = lambda: True
    description: str = ""
    int8: bool = False
    """Runs a quantized model: needs calibration, and is timed by default only where int8 is asked for."""


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend to the registry (a later registration under the same name replaces the earlier one)."""
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend ``name``.

    Raises:
        BackendError: unknown name, or the backend is not available on this machine.
    """
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(_BACKENDS)}")
    backend = _BACKENDS[name]
    if not backend.is_available():
        raise BackendError(f"backend {name!r} is not available on this machine ({backend.description})")
    return backend


def backend_label(name: str, deploy_method: str = "auto") -> str:
    """Display label of a backend, with the deploy path for ``cpu`` (e.g. "PyTorch CPU deployed (llga)"):
    ``deploy_method`` is the method used (``auto`` is resolved to the one it stands for here)."""
    backend = get_backend(name)
    if name == "cpu":
        from ..deploy.methods import resolve_method

        return f"{backend.label} ({resolve_method() if deploy_method == 'auto' else deploy_method})"
    return backend.label


def list_backends(available_only: bool = True) -> list[str]:
    """Registered backend names, in registration order."""
    return [b.name for b in _BACKENDS.values() if not available_only or b.is_available()]


def default_backends(int8: bool = False) -> list[str]:
    """Every available backend: the CPU ones always, the CUDA ones when a GPU exists, OpenVINO where it is
    installed; the int8 ones only with ``int8``."""
    return [name for name in list_backends(available_only=True) if int8 or not _BACKENDS[name].int8]


def is_int8(name: str) -> bool:
    """Whether backend ``name`` runs an int8 model."""
    return name in _BACKENDS and _BACKENDS[name].int8


def _runtime(runtime: str) -> Callable[..., Any]:
    """The ``prepare`` of a :mod:`pfconvert.deploy.runtime` backend, imported when first called."""

    def call(*args: Any) -> Any:
        return importlib.import_module("pfconvert.report.latency").prepare_runtime(runtime)(*args)

    return call


def _installed(*modules: str) -> Callable[[], bool]:
    def check() -> bool:
        from ..deploy._deps import installed

        return all(installed(m) for m in modules)

    return check


def _latency(name: str) -> Callable[..., Any]:
    """``pfconvert.report.latency.<name>``, imported when first called."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module("pfconvert.report.latency"), name)(*args)

    return call


register_backend(Backend("cpu", "PyTorch CPU deployed", "cpu", _latency("prepare_deployed"),
                         description="pfconvert.deploy.optimize_for_cpu: BN folded, frozen graph, oneDNN kernels "
                                     "and fusion"))
register_backend(Backend("cpu-eager", "PyTorch CPU eager (naive)", "cpu", _latency("prepare_eager"),
                         description="model(x) as it is: NCHW, BN unfused, aten kernels (converted max-pools: "
                                     "FastMaxPool2d)"))
register_backend(Backend("ort", "ONNX Runtime CPU", "cpu", _latency("prepare_ort"), _latency("ort_available"),
                         description="onnxruntime CPUExecutionProvider, all graph optimisations (needs onnxruntime)"))
register_backend(Backend("ort-int8", "ONNX Runtime CPU int8 (static QDQ)", "cpu", _runtime("ort-int8"),
                         _installed("onnxruntime"), int8=True,
                         description="the ONNX export quantized by onnxruntime.quantization.quantize_static (QDQ, "
                                     "int8 weights per channel and activations), CPUExecutionProvider"))
register_backend(Backend("ov", "OpenVINO CPU fp32", "cpu", _runtime("ov"), _installed("openvino"),
                         description="the ONNX export converted by OpenVINO, compiled for the CPU (latency hint, fp32; "
                                     "needs pip install 'pfconvert[openvino]')"))
register_backend(Backend("ov-int8", "OpenVINO CPU int8 (NNCF PTQ)", "cpu", _runtime("ov-int8"),
                         _installed("openvino", "nncf"), int8=True,
                         description="the OpenVINO model quantized by nncf.quantize (post-training, int8), compiled "
                                     "for the CPU (needs pip install 'pfconvert[openvino]')"))
register_backend(Backend("cuda", "PyTorch CUDA eager", "cuda", _latency("prepare_cuda"), _latency("cuda_available"),
                         description="needs a CUDA GPU"))
register_backend(Backend("cuda-amp", "PyTorch CUDA eager AMP fp16", "cuda", _latency("prepare_cuda_amp"),
                         _latency("cuda_available"), description="needs a CUDA GPU"))
