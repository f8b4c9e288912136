"""ONNX export with a numerical check against PyTorch, and ONNX Runtime sessions set up for CPU timing.

Two exporters exist in ``torch.onnx``: ``dynamo`` (``torch.export``-based, the default since PyTorch 2.9) and
``torchscript`` (the legacy tracer, deprecated but about 20x faster to export a CNN). :func:`export_onnx` uses
``dynamo`` unless told otherwise and falls back to ``torchscript`` when the dynamo exporter fails; ``auto`` prefers the
fast legacy exporter where it still exists (used for latency measurement, where export time is overhead).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .._files import atomic_write, check_output_file, quiet_fd
from ..errors import ExportError, ExportExistsError, one_line
from ..graph.dataflow import probe_input

__all__ = ["ExportError", "ExportResult", "EXPORTERS", "export_onnx", "export_onnx_bytes", "ort_session",
           "check_onnx"]

EXPORTERS = ("dynamo", "torchscript", "auto")
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how close ONNX Runtime came to PyTorch."""

    path: Path
    exporter: str
    opset: int
    dynamic_batch: bool
    max_abs_diff: float | None
    tolerance: float | None
    size_bytes: int


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters: deprecation warnings, the dynamo exporter's progress lines on stdout, and the graphs
    that TorchScript's native code dumps on stdout and stderr when an export fails."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_fd(1), quiet_fd(2):
        warnings.simplefilter("ignore")
        yield


def _export_to(model: nn.Module, path: Path, input_size: tuple[int, int, int], opset: int, dynamic_batch: bool,
               exporter: str) -> None:
    x = probe_input(model, (2 if dynamic_batch else 1, *input_size))
    if exporter == "torchscript":
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
        return
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=shapes, opset_version=opset, external_data=False, verbose=False)
    program.save(str(path), external_data=False)


def _export(model: nn.Module, path: Path, input_size: tuple[int, int, int], opset: int, dynamic_batch: bool,
            exporter: str) -> str:
    """Export in eval mode (mode restored); returns the exporter that succeeded."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    order = {"dynamo": ["dynamo", "torchscript"], "torchscript": ["torchscript"],
             "auto": ["torchscript", "dynamo"]}[exporter]
    was_training = model.training
    model.eval()
    errors = []
    try:
        for name in order:
            try:
                with _quiet(), torch.no_grad():
                    _export_to(model, path, input_size, opset, dynamic_batch, name)
                return name
            except Exception as exc:  # noqa: BLE001 - exporters raise many types; all mean "this exporter failed"
                errors.append(f"{name}: {type(exc).__name__}: {one_line(exc, 200)}")
    finally:
        model.train(was_training)
    raise ExportError(f"ONNX export of {type(model).__name__} failed ({'; '.join(errors)}); set PFCONVERT_DEBUG=1 and "
                      "try --exporter torchscript or another --opset")


def ort_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads.

    Spinning of idle pool threads is turned off: on a small, shared CPU a spinning thread takes the core that
    another thread needs.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def export_onnx_bytes(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), opset: int = 18,
                      dynamic_batch: bool = True, exporter: str = "auto") -> bytes:
    """The ONNX model as bytes (no numerical check); see :func:`export_onnx`."""
    with tempfile.TemporaryDirectory(prefix="pfconvert-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export(model, path, input_size, opset, dynamic_batch, exporter)
        return path.read_bytes()


def check_onnx(model: nn.Module, onnx_model: str | Path | bytes, input_size: tuple[int, int, int],
               batch_size: int = 2, seed: int = 0) -> float:
    """Max absolute difference between ONNX Runtime and the PyTorch model (eval mode) on one random batch."""
    x = torch.randn((batch_size, *input_size), generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ref = model(x.to(next(iter(model.parameters())).device)).float().cpu().numpy()
    finally:
        model.train(was_training)
    session = ort_session(onnx_model)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != ref.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))


def export_onnx(model: nn.Module, out: str | Path, input_size: tuple[int, int, int] = (3, 224, 224), *,
                opset: int = 18, dynamic_batch: bool = False, exporter: str = "dynamo", check: bool = True,
                tolerance: float = 1e-3, overwrite: bool = False) -> ExportResult:
    """Export ``model`` to an ONNX file and check it against PyTorch with ONNX Runtime.

    Args:
        model: The model (exported in eval mode; its mode is restored).
        out: The ``.onnx`` file to write (weights inside the file, no external data).
        input_size: (C, H, W) of the example input.
        opset: ONNX opset version.
        dynamic_batch: Make the batch dimension dynamic (checked at batch 2); else fixed at 1.
        exporter: ``dynamo``, ``torchscript`` or ``auto`` (see the module docstring).
        check: Run ONNX Runtime and PyTorch on the same random input and compare.
        tolerance: Largest max-abs difference accepted by the check.
        overwrite: Replace an existing ``out``.

    Raises:
        ExportError: ``out`` exists and not ``overwrite`` (:class:`~pfconvert.errors.ExportExistsError`), the export
            fails, or the check exceeds ``tolerance`` (the file is kept for inspection; the message says where).
    """
    out = check_output_file(out, overwrite, example="model.onnx", exists=ExportExistsError, error=ExportError)
    used: list[str] = []
    atomic_write(out, lambda temp: used.append(_export(model, temp, input_size, opset, dynamic_batch, exporter)))
    diff = check_onnx(model, out, input_size, batch_size=2 if dynamic_batch else 1) if check else None
    result = ExportResult(out, used[0], opset, dynamic_batch, diff, tolerance if check else None, out.stat().st_size)
    if diff is not None and not diff <= tolerance:  # also catches NaN
        raise ExportError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (max abs) > tolerance "
                          f"{tolerance:g}; the export is kept at {out} for inspection (try --exporter torchscript "
                          "or another --opset)")
    return result
