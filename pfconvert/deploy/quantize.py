"""int8 post-training quantization inputs and ONNX Runtime's static QDQ path.

A :class:`Calibration` holds the inputs that calibrate the activation ranges: images of the user's data, prepared
as the model is fed (built by :func:`pfconvert.data.calibration_images`), or, when there is no data, seeded random
inputs (:func:`synthetic_calibration`), in which case the int8 model's accuracy is unknown and every caller says so.

:func:`quantize_ort` is ONNX Runtime's own static quantization (``onnxruntime.quantization.quantize_static``, QDQ
format, int8 weights per channel, uint8 activations, MinMax calibration) through a ``CalibrationDataReader``; the
OpenVINO path (NNCF) is in :mod:`pfconvert.deploy.openvino`. Activations are uint8 (U8S8), the x86 fast path of ONNX
Runtime's int8 kernels: with int8 activations (S8S8) the same models ran 1.8-2.1x slower at 224 px, batch 1
(mobilenetv2_100 0.96 vs 2.01 ms, resnet50 8.2 vs 15.1 ms, AMD EPYC with AVX-512 VNNI), and the NCHW int8 max-pool
they fall back to made max-pool conversions 3-5x slower than their originals. On a CPU without VNNI, weights use 7 bits
(``reduce_range``), ONNX Runtime's advice against the saturation of U8S8 there (:func:`cpu_has_vnni`). Max-pools
that ONNX Runtime would run in its generic NCHW int8 kernel (those not reading a quantized conv) run in fp32 instead
(:func:`fp32_followers`, :func:`unfold_int8_pools`): at 224 px, batch 1, resnet34 ``basic-max`` 29.0 -> 16.2 ms,
convnext_tiny ``maxpool`` 182 -> 68 ms (measured under load, so compare the direction, not the figures).

Both int8 paths keep the model's first and last weighted layers (the stem conv, the classifier) in fp32
(:data:`KEEP_FP32`), the common practice for int8 CNNs: quantizing them cost up to 45 points of top-1 on the
fine-tuned converted efficientnet_lite1 at 64 px and 0.4-1.1 point on the originals (Fashion-MNIST val split,
docs/results/int8-accuracy.md). It costs speed, most where the stem is a large share of the model (resnet50
``r50-max`` on OpenVINO int8: 1.49x at batch 1 and 32, 1.57x / 1.60x with every layer in int8 in an earlier run;
docs/results/deploy-cpu.md); ``keep_fp32=False`` quantizes every layer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError, one_line
from ._deps import require

__all__ = ["Calibration", "Validation", "DEFAULT_CALIB_IMAGES", "DEFAULT_CONTROL_IMAGES", "SYNTHETIC_IMAGES",
           "KEEP_FP32", "edge_layers", "fp32_followers", "unfold_int8_pools", "cpu_has_vnni", "synthetic_calibration",
           "check_calibration", "quantize_ort"]

KEEP_FP32 = True
"""Whether int8 quantization keeps the first and the last weighted layer in fp32 (see the module docstring)."""

DEFAULT_CALIB_IMAGES = 300
"""Calibration images by default (``--calib-images``): NNCF's default subset size is 300."""
DEFAULT_CONTROL_IMAGES = 1000
"""Labelled validation images that accuracy-controlled int8 (``--int8-max-drop``) measures the drop on by default."""
SYNTHETIC_IMAGES = 32
"""Random inputs used to calibrate when no data is given (enough to set ranges; the accuracy is unknown anyway)."""


@dataclass(frozen=True)
class Calibration:
    """Inputs that calibrate an int8 model: ``inputs`` (N, C, H, W) float32, as the model is fed.

    Attributes:
        inputs: The calibration inputs.
        source: What they are, for the user ("300 training images of fashion-mnist (seeded subset)").
        synthetic: True when they are random inputs, not images: the int8 accuracy is then unknown.
    """

    inputs: np.ndarray
    source: str
    synthetic: bool = False

    @classmethod
    def from_tensor(cls, images: torch.Tensor, source: str) -> Calibration:
        """From a batch of prepared images."""
        return cls(np.ascontiguousarray(images.detach().cpu().float().numpy()), source, synthetic=False)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the inputs."""
        c, h, w = self.inputs.shape[1:]
        return int(c), int(h), int(w)

    def samples(self) -> Iterator[np.ndarray]:
        """One (1, C, H, W) array per input."""
        for i in range(len(self)):
            yield self.inputs[i:i + 1]

    def describe(self) -> str:
        """One line: what calibrated the int8 model, and whether its accuracy is known."""
        if self.synthetic:
            return (f"int8 calibrated on {self.source} (no --data given): the int8 accuracy is unknown; pass --data "
                    "to calibrate on your images")
        return f"int8 calibrated on {self.source}"


@dataclass(frozen=True)
class Validation:
    """Labelled inputs that accuracy-controlled int8 measures top-1 on: ``inputs`` (N, C, H, W) float32 as the model is
    fed, ``labels`` (N,) class indices, and what they are (``source``); never the calibration images."""

    inputs: np.ndarray
    labels: np.ndarray
    source: str

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor, source: str) -> Validation:
        """From a batch of prepared images and their labels."""
        return cls(np.ascontiguousarray(images.detach().cpu().float().numpy()),
                   labels.detach().cpu().long().numpy(), source)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def samples(self) -> Iterator[tuple[np.ndarray, int]]:
        """One ((1, C, H, W) array, label) pair per input."""
        for i in range(len(self)):
            yield self.inputs[i:i + 1], int(self.labels[i])


def synthetic_calibration(input_size: tuple[int, int, int], count: int = SYNTHETIC_IMAGES,
                          seed: int = 0) -> Calibration:
    """``count`` seeded standard-normal inputs (roughly the statistics of normalised images)."""
    x = torch.randn((count, *input_size), generator=torch.Generator().manual_seed(seed))
    return Calibration(x.numpy(), f"{count} random inputs", synthetic=True)


def check_calibration(calibration: Calibration, input_size: tuple[int, int, int]) -> None:
    """Raise when the calibration inputs do not have the model's input size."""
    if calibration.input_size != tuple(input_size):
        raise ExportError(f"calibration inputs are {'x'.join(map(str, calibration.input_size))} but the model takes "
                          f"{'x'.join(map(str, input_size))}; prepare the calibration images at the model's input")
    if len(calibration) == 0:
        raise ExportError("no calibration inputs; pass --calib-images 1 or more")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
        try:
            yield
        finally:
            logger.setLevel(level)


def edge_layers(names_and_types: list[tuple[str, str]], weighted: tuple[str, ...]) -> list[str]:
    """The names of the first and the last node (in graph order) whose type is in ``weighted``: what int8 keeps in
    fp32 (one name when they are the same node, none when there is no such node)."""
    found = [name for name, kind in names_and_types if kind in weighted]
    return list(dict.fromkeys([found[0], found[-1]])) if found else []


_PASS_THROUGH = frozenset({"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Mul"})
_POOLS = frozenset({"MaxPool", "AveragePool"})
_ONNX_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""The ONNX node types int8 quantizes weights of (what :func:`edge_layers` looks for in an ONNX graph)."""


def fp32_followers(nodes: list[tuple[str, str, list[str], list[str]]], kept: list[str],
                   weighted: tuple[str, ...] = _ONNX_WEIGHTED) -> list[str]:
    """Pooling nodes that read a kept fp32 layer's output through activations only, and the weighted nodes that read
    those pools' outputs the same way: ``nodes`` are ``(name, op type, inputs, outputs)`` in graph order, ``kept`` the
    fp32 layers (:func:`edge_layers`).

    Left to the quantizer, such a pool (a max-pool conversion's first pool, right after the fp32 stem) gets its input
    quantized (ONNX Runtime moves the quantization of the next layer's input up through a max-pool) and runs in ONNX
    Runtime's NCHW int8 pooling kernel, which took 68% of mobilenetv2_100 ``maxpool``'s int8 time at 224 px. Kept in
    fp32 with the layer that reads it, it costs about nothing.
    """
    readers: dict[str, list[tuple[str, str, list[str]]]] = {}
    for name, kind, inputs, outputs in nodes:
        for tensor in inputs:
            readers.setdefault(tensor, []).append((name, kind, outputs))
    outputs_of = {name: outputs for name, _, _, outputs in nodes}

    def reached(starts: list[str], stop: frozenset[str]) -> list[str]:
        """Nodes of a ``stop`` type reached from ``starts`` through pass-through nodes (the stops not walked past)."""
        frontier = [t for name in starts for t in outputs_of.get(name, [])]
        seen: set[str] = set()
        found: list[str] = []
        while frontier:
            for name, kind, outputs in readers.get(frontier.pop(), []):
                if name in seen or (kind not in _PASS_THROUGH and kind not in stop):
                    continue
                seen.add(name)
                if kind in stop:
                    found.append(name)
                else:
                    frontier.extend(outputs)
        return found

    pools = reached(kept, _POOLS)
    return list(dict.fromkeys(pools + reached(pools, frozenset(weighted))))


def unfold_int8_pools(model: Any) -> int:
    """Keep ONNX Runtime from running max-pools in its generic NCHW int8 kernel: for each ``DequantizeLinear ->
    MaxPool -> QuantizeLinear`` whose input does not come from a quantized Conv, give the output quantization a scale
    of its own (the input's x (1 + 2^-8), a sub-LSB change), so that ONNX Runtime can no longer fold the pair into an
    int8 pool and runs it in fp32 (its fast pooling kernel) between the two. Pools that read a quantized Conv are left
    alone: ONNX Runtime runs those in its NHWC int8 kernel, which is fast. ``model`` (an ``onnx.ModelProto``) is
    changed in place; returns how many pools were changed.

    The generic kernel took 76% of convnext_tiny ``maxpool``'s int8 time (pools reading LayerNorm / residual adds) at
    224 px, batch 1.
    """
    from onnx import numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    initializers = {init.name: init for init in graph.initializer}

    def quantized_conv(node: Any) -> bool:
        weight = producer.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        return weight is not None and weight.op_type == "DequantizeLinear"

    changed = 0
    for node in list(graph.node):
        if node.op_type != "MaxPool":
            continue
        dq = producer.get(node.input[0])
        q_in = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q_in is None or q_in.op_type != "QuantizeLinear":
            continue
        source = producer.get(q_in.input[0])
        outs = readers.get(node.output[0], [])
        if (source is not None and quantized_conv(source)) or not outs or any(
                r.op_type != "QuantizeLinear" or r.input[1] not in initializers for r in outs):
            continue
        for q in outs:
            name = f"{q.output[0]}_own_scale"
            scale = numpy_helper.to_array(initializers[q.input[1]]).astype(np.float32) * np.float32(1 + 2 ** -8)
            graph.initializer.append(numpy_helper.from_array(scale, name))
            q.input[1] = name
            for reader in readers.get(q.output[0], []):
                if reader.op_type == "DequantizeLinear":
                    reader.input[1] = name
        changed += 1
    return changed


def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot-product instruction (x86 VNNI / AMX, or any non-x86 CPU: only x86's U8S8 path
    saturates); read from /proc/cpuinfo, True where it cannot be read."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_ort(onnx_model: bytes, calibration: Calibration, *, per_channel: bool = True,
                 keep_fp32: bool = KEEP_FP32, reduce_range: bool | None = None) -> bytes:
    """Quantize an fp32 ONNX model (bytes, one input) with ONNX Runtime's static QDQ quantization.

    Args:
        onnx_model: The fp32 model (e.g. from :func:`pfconvert.deploy.onnx.export_onnx_bytes`).
        calibration: The calibration inputs (one forward each, batch 1).
        per_channel: Per-channel weight scales (ONNX Runtime's recommendation for CNNs).
        keep_fp32: Leave the first and the last Conv / Gemm / MatMul node unquantized (:func:`edge_layers`), and the
            pools right after them (:func:`fp32_followers`).
        reduce_range: 7-bit weights; None: where this CPU lacks VNNI (:func:`cpu_has_vnni`).

    Returns:
        The QDQ model as bytes.

    Raises:
        ExportError: onnxruntime lacks the quantization tools, or the quantization fails.
    """
    require("onnxruntime", "int8 quantization with ONNX Runtime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.name = name
            self.items = calibration.samples()

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {self.name: item}

    import onnx

    graph = onnx.load_model_from_string(onnx_model).graph
    name = graph.input[0].name
    exclude = edge_layers([(n.name, n.op_type) for n in graph.node], _ONNX_WEIGHTED) if keep_fp32 else []
    exclude += fp32_followers([(n.name, n.op_type, list(n.input), list(n.output)) for n in graph.node], exclude)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    with tempfile.TemporaryDirectory(prefix="pfconvert-ort-int8-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_model)
        try:
            with _quiet():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                quantize_static(str(pre), str(out), Reader(name), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=exclude, reduce_range=reduce_range)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; all mean "it failed"
            raise ExportError(f"ONNX Runtime int8 quantization failed: {type(exc).__name__}: {one_line(exc, 200)}"
                              ) from None
        quantized = onnx.load_model_from_string(out.read_bytes())
        unfold_int8_pools(quantized)
        return quantized.SerializeToString()
