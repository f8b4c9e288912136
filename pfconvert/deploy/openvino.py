"""OpenVINO: a model converted to OpenVINO (fp32, or int8 by NNCF post-training quantization), compiled for the CPU,
and exported as IR (``.xml`` + ``.bin``) checked against PyTorch.

The model goes to OpenVINO through the ONNX file pfconvert already exports (:func:`pfconvert.deploy.onnx.
export_onnx_bytes`, ``ov.convert_model`` on it), so ONNX Runtime and OpenVINO run the same graph. int8 is NNCF's
``nncf.quantize`` on the OpenVINO model with calibration inputs (:class:`~pfconvert.deploy.quantize.Calibration`),
with full bias correction, and the first and last weighted layers kept in fp32
(:data:`pfconvert.deploy.quantize.KEEP_FP32`).
Compiled models run with ``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_NUM_THREADS`` threads. An fp32 model runs at
fp32 inference precision (OpenVINO would otherwise run its layers in bf16 on CPUs with native bf16, such as AMX, and
"fp32" would not be fp32). An int8 model runs at OpenVINO's default inference precision, as a user's
``compile_model(model, "CPU")`` runs it: the layers NNCF keeps in floating point (the stem and the classifier) run in
bf16 where the CPU has native bf16 (an Intel Xeon with AMX), in fp32 elsewhere; its accuracy is measured that way
too.

Both packages are optional (``pip install 'pfconvert[openvino]'``); they are imported on first use, never when the
command line starts.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import check_output_file
from ..errors import ExportError, ExportExistsError, one_line
from ._deps import installed, require
from .quantize import KEEP_FP32, Calibration, Validation, check_calibration, edge_layers

__all__ = ["openvino_available", "nncf_available", "to_openvino", "quantize_openvino", "fp32_weighted_layers",
           "compile_openvino", "model_precision", "default_precision", "OpenVINOExportResult", "export_openvino",
           "top1_agreement"]

_WEIGHTED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def openvino_available() -> bool:
    """Whether openvino is installed (checked without importing it)."""
    return installed("openvino")


def nncf_available() -> bool:
    """Whether openvino and nncf (int8) are installed."""
    return installed("openvino") and installed("nncf")


def _ov() -> Any:
    return require("openvino", "the OpenVINO backend")


def to_openvino(model: nn.Module, input_size: tuple[int, int, int], onnx_model: bytes | None = None) -> Any:
    """The model as an ``openvino.Model`` with a dynamic batch dimension, converted from its ONNX export.

    Args:
        model: The PyTorch model (exported in eval mode; its mode is restored).
        input_size: (C, H, W).
        onnx_model: An ONNX export of ``model`` with a dynamic batch, when the caller has one already.
    """
    ov = _ov()
    if onnx_model is None:
        from .onnx import export_onnx_bytes

        onnx_model = export_onnx_bytes(model, input_size, dynamic_batch=True)
    try:
        return ov.convert_model(io.BytesIO(onnx_model))
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"OpenVINO could not convert the ONNX export: {type(exc).__name__}: {one_line(exc, 200)}"
                          ) from None


@contextlib.contextmanager
def _progress_to_stderr() -> Iterator[None]:
    """NNCF draws its progress bars on stdout; stdout is for data."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def quantize_openvino(ov_model: Any, calibration: Calibration, input_size: tuple[int, int, int] | None = None,
                      keep_fp32: bool = KEEP_FP32, *, max_drop: float | None = None,
                      validation: Validation | None = None) -> Any:
    """NNCF post-training int8 quantization (``nncf.quantize``) of an ``openvino.Model``, calibrated on every input of
    ``calibration`` (one sample each). NNCF's defaults, except: full bias correction (``fast_bias_correction=False``:
    with the fast one the fine-tuned converted efficientnet_lite1 ``dw-hybrid`` scored 67.4% on the Fashion-MNIST val
    split, with the full one 82.6%), and with ``keep_fp32`` the first and the last Convolution / MatMul in fp32
    (:func:`pfconvert.deploy.quantize.edge_layers`).

    With ``max_drop`` (top-1 points), NNCF's accuracy-aware quantization (``nncf.quantize_with_accuracy_control``)
    measures the int8 model's top-1 on ``validation`` against the fp32 model's and puts the layers that cost the most
    back in fp32 until the drop is at most ``max_drop`` (or nothing is left to put back). It starts from the same
    model as plain quantization (the edges in fp32 with ``keep_fp32``). Started from every layer in int8 instead, it met
    the bound on its 1,000 val images for the fine-tuned lite1 ``maxpool`` conversion by putting 10 layers back in
    fp32, and ended 1.65 points below fp32 on the test split (0.26 started from the edges kept;
    docs/results/int8-accuracy.md): a bound fitted on a sample, from a model 36 points off, did not carry over.

    ``keep_fp32``: keep the first and the last weighted layer in fp32 (default :data:`KEEP_FP32`).

    Raises:
        ExportError: nncf is not installed, the calibration inputs do not fit, ``max_drop`` comes without
            validation images, or NNCF fails.
    """
    if input_size is not None:
        check_calibration(calibration, input_size)
    if max_drop is not None and (validation is None or len(validation) == 0):
        raise ExportError("accuracy-controlled int8 (--int8-max-drop) needs labelled validation images; pass --data")
    nncf = require("nncf", "int8 quantization for OpenVINO (NNCF)")
    import logging

    nncf.set_log_level(logging.ERROR)
    kept = edge_layers([(op.get_friendly_name(), op.get_type_name()) for op in ov_model.get_ordered_ops()],
                       _WEIGHTED) if keep_fp32 else []
    options: dict[str, Any] = {
        "subset_size": len(calibration), "fast_bias_correction": False,
        "ignored_scope": nncf.IgnoredScope(names=kept, validate=False) if kept else None}
    try:
        with _progress_to_stderr():
            if max_drop is None:
                return nncf.quantize(ov_model, nncf.Dataset(list(calibration.samples())), **options)
            return nncf.quantize_with_accuracy_control(
                ov_model, nncf.Dataset(list(calibration.samples())),
                nncf.Dataset(list(validation.samples()), lambda item: item[0]),  # type: ignore[union-attr]
                _top1, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **options)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"NNCF int8 quantization failed: {type(exc).__name__}: {one_line(exc, 200)}") from None


def _top1(compiled: Any, items: Any) -> tuple[float, list[float]]:
    """NNCF's validation function: top-1 in percent over ``(input, label)`` items, and each item's 0 / 100."""
    hits = [100.0 * float(int(np.argmax(compiled(x)[0])) == label) for x, label in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


def fp32_weighted_layers(ov_model: Any) -> list[str]:
    """The Convolution / MatMul nodes of ``ov_model`` whose weights are not int8 (for an int8 model: the layers it
    keeps in fp32), by friendly name in graph order."""
    def int8_weights(op: Any) -> bool:
        node = op.input_value(1).get_node()
        for _ in range(4):  # int8 weights: an int8 constant (then Convert, Multiply by the scale...) or a FakeQuantize
            if node.get_type_name() == "FakeQuantize" or "int8" in str(node.get_output_element_type(0)):
                return True
            if node.get_input_size() == 0:
                return False
            node = node.input_value(0).get_node()
        return False

    return [op.get_friendly_name() for op in ov_model.get_ordered_ops()
            if op.get_type_name() in _WEIGHTED and not int8_weights(op)]


def compile_openvino(ov_model: Any, threads: int | None = None, batch_size: int | None = None, *,
                     perf_count: bool = False, precision: str | None = "f32") -> Any:
    """Compile for the CPU (latency hint, ``threads`` inference threads, ``precision``).

    Args:
        ov_model: An ``openvino.Model`` (not modified).
        threads: Inference threads (None: OpenVINO's choice).
        batch_size: Fix the batch dimension to this size (static shapes compile to faster kernels); None keeps
            the model's (dynamic) batch.
        perf_count: Turn on OpenVINO's per-layer counters (``InferRequest.profiling_info``; they cost a little
            time per inference).
        precision: The inference precision of the layers that compute in floating point: ``"f32"`` (an fp32 model
            stays fp32), or None for OpenVINO's default (bf16 on CPUs with native bf16, f32 elsewhere), which int8
            models use (:func:`model_precision`).
    """
    ov = _ov()
    if batch_size is not None:
        ov_model = ov_model.clone()
        shape = list(ov_model.inputs[0].get_partial_shape())
        shape[0] = batch_size
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(shape)})
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if perf_count:
        config["PERF_COUNT"] = True
    try:
        return ov.Core().compile_model(ov_model, "CPU", config)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"OpenVINO could not compile the model for the CPU: {type(exc).__name__}: "
                          f"{one_line(exc, 200)}") from None


def model_precision(int8: bool) -> str | None:
    """The ``precision`` :func:`compile_openvino` is given for a model: fp32 models are pinned to ``"f32"``, int8 ones
    run at OpenVINO's default (None), as they would be deployed."""
    return None if int8 else "f32"


def default_precision() -> str:
    """OpenVINO's default inference precision on this CPU (``bf16`` with native bf16, such as AMX; else ``f32``):
    the precision an int8 model's floating-point layers run at."""
    return _ov().Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def _reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(x).float().cpu().numpy()
    finally:
        model.train(was_training)


def top1_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of rows whose arg-max agrees."""
    return float(np.mean(reference.argmax(-1) == other.argmax(-1)))


@dataclass
class OpenVINOExportResult:
    """What :func:`export_openvino` wrote and how it was checked.

    Attributes:
        xml, bin: The IR files.
        int8: Quantized with NNCF.
        max_abs_diff: fp32: max abs difference vs PyTorch on a random batch (None when not checked).
        tolerance: fp32: the accepted difference.
        agreement: int8: share of the check images on which the int8 and the PyTorch top-1 agree.
        check_images: How many images ``agreement`` is over, and what they are (``check_source``).
        calibration: What calibrated the int8 model (None for fp32).
        max_drop: int8 with accuracy control: the most top-1 points below fp32 it allowed (None: not controlled).
        fp32_layers: int8: the weighted layers the model keeps in fp32.
    """

    xml: Path
    bin: Path
    int8: bool
    max_abs_diff: float | None = None
    tolerance: float | None = None
    agreement: float | None = None
    min_agreement: float | None = None
    check_images: int = 0
    check_source: str = ""
    calibration: str | None = None
    calibration_synthetic: bool = False
    max_drop: float | None = None
    fp32_layers: list[str] | None = None

    @property
    def size_bytes(self) -> int:
        """Size of the ``.xml`` and ``.bin`` together."""
        return self.xml.stat().st_size + self.bin.stat().st_size


def export_openvino(model: nn.Module, out: str | Path, input_size: tuple[int, int, int], *, int8: bool = False,
                    calibration: Calibration | None = None, check_inputs: torch.Tensor | None = None,
                    check_source: str = "", check: bool = True, tolerance: float = 1e-3,
                    min_agreement: float = 0.9, dynamic_batch: bool = True,
                    overwrite: bool = False, max_drop: float | None = None,
                    validation: Validation | None = None) -> OpenVINOExportResult:
    """Write ``model`` as OpenVINO IR (``out`` = ``NAME.xml``, with ``NAME.bin`` next to it) and check it.

    fp32 is checked numerically (max abs difference vs PyTorch on a seeded random batch of 2, at most
    ``tolerance``). int8 (``int8=True``, NNCF with ``calibration``, random inputs when None) is checked by the top-1
    agreement of the int8 model with PyTorch on ``check_inputs`` (images of the user's data, other than the
    calibration images): below ``min_agreement`` the export fails. Without check images the agreement is
    measured on random inputs and reported, never failed on (the int8 accuracy is then unknown). ``max_drop`` and
    ``validation``: accuracy-controlled int8 (:func:`quantize_openvino`).

    Raises:
        ExportError: a target exists (and not ``overwrite``), openvino / nncf are missing, the conversion fails, or
            the check fails (the files are kept for inspection; the message says where).
    """
    ov = _ov()
    xml = Path(out)
    if xml.suffix != ".xml":
        raise ExportError(f"--out {xml}: an OpenVINO IR is a .xml file (with its .bin next to it); give a name "
                          "such as model.xml")
    binary = xml.with_suffix(".bin")
    for path in (xml, binary):
        check_output_file(path, overwrite, example="model.xml", exists=ExportExistsError, error=ExportError)
    ov_model = to_openvino(model, input_size)
    if int8:
        from .quantize import synthetic_calibration

        calibration = calibration if calibration is not None else synthetic_calibration(input_size)
        ov_model = quantize_openvino(ov_model, calibration, input_size, max_drop=max_drop, validation=validation)
    if not dynamic_batch:
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([1, *input_size])})
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}.", dir=xml.parent) as tmp:
        ov.save_model(ov_model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        shutil.move(str(Path(tmp) / "model.bin"), binary)  # the weights first: the .xml names a complete model
        shutil.move(str(Path(tmp) / "model.xml"), xml)
    result = OpenVINOExportResult(xml, binary, int8, calibration=calibration.source if int8 and calibration else None,
                                  calibration_synthetic=bool(int8 and calibration and calibration.synthetic),
                                  max_drop=max_drop if int8 else None,
                                  fp32_layers=fp32_weighted_layers(ov_model) if int8 else None)
    if not check:
        return result
    compiled = compile_openvino(ov.Core().read_model(str(xml)), precision=model_precision(int8))
    if not int8:
        x = torch.randn((2 if dynamic_batch else 1, *input_size), generator=torch.Generator().manual_seed(0))
        got = compiled(x.numpy())[0]
        ref = _reference(model, x)
        result.max_abs_diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
        result.tolerance = tolerance
        if not result.max_abs_diff <= tolerance:
            raise ExportError(f"OpenVINO output differs from PyTorch by {result.max_abs_diff:.3g} (max abs) > "
                              f"tolerance {tolerance:g}; the export is kept at {xml} for inspection")
        return result
    given = check_inputs is not None
    x = check_inputs if given else torch.randn((64, *input_size), generator=torch.Generator().manual_seed(1))
    ref = _reference(model, x)
    batch = 1 if not dynamic_batch else 64
    got = np.concatenate([compiled(x[i:i + batch].numpy())[0] for i in range(0, len(x), batch)])
    result.agreement = top1_agreement(ref, got)
    result.check_images = len(x)
    result.check_source = check_source if given else f"{len(x)} random inputs (no --data: the int8 accuracy is unknown)"
    result.min_agreement = min_agreement if given else None
    if given and result.agreement < min_agreement:
        raise ExportError(f"the int8 model agrees with PyTorch on the top-1 of {result.agreement:.1%} of "
                          f"{len(x)} images, below --min-agreement {min_agreement:.0%}; the export is kept at {xml} "
                          "for inspection (calibrate on more images with --calib-images, or check the model's "
                          "accuracy with `pfconvert eval --backend ov-int8`)")
    return result
