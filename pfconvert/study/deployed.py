"""Accuracy as deployed: top-1 of models in PyTorch (fp32) and on int8 runtimes, side by side, on the user's data.

int8 changes what a model computes, so its accuracy is measured, not assumed: each model is quantized on the same
calibration images (training images, prepared as the model is fed) and evaluated on the same images of the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data.config import DataConfig
from ..deploy.quantize import DEFAULT_CONTROL_IMAGES, Calibration, Validation

__all__ = ["PYTORCH_FP32", "data_calibration", "data_validation", "prepare_runtimes", "accuracy_on_runtimes",
           "data_deployer"]

PYTORCH_FP32 = "PyTorch fp32"
"""The label of the reference row (ONNX Runtime and OpenVINO fp32 compute the same within 1e-4)."""


def data_calibration(data: str, data_cfg: DataConfig, count: int, val_split: float = 0.1) -> Calibration:
    """``count`` training images of ``data`` prepared as ``data_cfg`` feeds them, as a :class:`Calibration`."""
    from ..data.calibration import calibration_images

    images, source = calibration_images(data, data_cfg, count, val_split=val_split)
    return Calibration.from_tensor(images, source)


def data_validation(data: str, data_cfg: DataConfig, count: int = DEFAULT_CONTROL_IMAGES,
                    val_split: float = 0.1) -> Validation:
    """``count`` labelled images of the val split of ``data`` (carved from the training images, as the fine-tune
    carves it) prepared as ``data_cfg`` feeds them: what accuracy-controlled int8 measures its drop on."""
    from ..data.calibration import labelled_images

    images, labels, source = labelled_images(data, data_cfg, count, split="val", val_split=val_split)
    return Validation.from_tensors(images, labels, source)


def prepare_runtimes(models: dict[str, nn.Module], runtimes: Sequence[str], input_size: tuple[int, int, int],
                     calibration: Calibration | None = None, *, max_drop: float | None = None,
                     validation: Validation | None = None,
                     on_step: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Each model exported (and quantized) once for each runtime: ``{model name: {runtime: RuntimeModel}}``, to be
    evaluated (:func:`accuracy_on_runtimes`) and timed (:class:`pfconvert.report.latency.LatencyConfig`'s
    ``prepared``) as the same model. int8 runtimes calibrate on ``calibration``; ``max_drop`` (with ``validation``)
    makes ``ov-int8`` accuracy-controlled (:func:`pfconvert.deploy.runtime.build_runtime`)."""
    from ..deploy.runtime import build_runtime

    step = on_step or (lambda _: None)
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        for runtime in runtimes:
            step(f"deploying the {name} model on {runtime}")
            control = {"max_drop": max_drop, "validation": validation} if runtime == "ov-int8" else {}
            out.setdefault(name, {})[runtime] = build_runtime(model, runtime, input_size, calibration, **control)
    return out


def accuracy_on_runtimes(models: dict[str, nn.Module], runtimes: Sequence[str], data: str, data_cfg: DataConfig, *,
                         split: str = "test", limit: int | None = 1000, calibration: Calibration | None = None,
                         val_split: float = 0.1, batch_size: int = 64, threads: int | None = None,
                         on_step: Callable[[str], None] | None = None,
                         prepared: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, float]]:
    """Top-1 (percent) of each model in PyTorch and on each runtime of ``runtimes`` (int8 ones calibrated on
    ``calibration``, which the caller reads from the training images: :func:`data_calibration`). ``prepared``
    (:func:`prepare_runtimes`): the runtime models to evaluate, instead of deploying each model here.

    Returns:
        ``{"PyTorch fp32": {name: top-1}, "<runtime label>": {name: top-1}, ...}``.
    """
    from ..data.datasets import open_split, resolve_source
    from ..data.loaders import eval_loader
    from ..data.transforms import build_transforms
    from ..deploy.runtime import Deployed, deploy
    from ..recover.metrics import evaluate
    from ..recover.precision import resolve_precision

    step = on_step or (lambda _: None)
    dataset = open_split(resolve_source(data), split, limit, val_fraction=val_split)
    dataset.mode = data_cfg.image_mode
    cfg, _ = data_cfg.for_images(dataset.image_size())
    dataset.transform = build_transforms(cfg, "none")[1]
    loader = eval_loader(dataset, batch_size)
    precision = resolve_precision(torch.device("cpu"))
    out: dict[str, dict[str, Any]] = {PYTORCH_FP32: {}}
    for name, model in models.items():
        step(f"top-1 of the {name} model in PyTorch on {len(dataset)} {split} images")
        out[PYTORCH_FP32][name] = evaluate(model, loader, precision).top1
    for runtime in runtimes:
        for name, model in models.items():
            if prepared is not None and runtime in prepared.get(name, {}):
                deployed = Deployed(prepared[name][runtime], threads)
            else:
                step(f"deploying the {name} model on {runtime}")
                deployed = deploy(model, runtime, cfg.input_size, calibration, threads)
            step(f"top-1 of the {name} model on {deployed.label}")
            out.setdefault(deployed.label, {})[name] = evaluate(deployed, loader, precision).top1
    return out


def data_deployer(runtimes: Sequence[str], data: str, calib_images: int = 300, val_split: float | None = None,
                  on_note: Callable[[str], None] | None = None, *, max_drop: float | None = None,
                  control_images: int = DEFAULT_CONTROL_IMAGES,
                  ) -> Callable[[str, nn.Module, DataConfig], list[tuple[str, nn.Module]]]:
    """The ``deploy`` hook of :func:`pfconvert.recover.finetune.api.evaluate_artifact` (``pfconvert eval
    --backend``): each model it is given is deployed on every runtime of ``runtimes``, int8 ones calibrated on
    ``calib_images`` training images of ``data`` (never the val or test split). One calibration set per input size
    is shared by all the models, so the original's and the converted model's int8 figures compare like with like.

    Args:
        runtimes: names from :data:`pfconvert.deploy.runtime.RUNTIMES`, checked now
            (:func:`pfconvert.deploy.runtime.check_runtimes`).
        data: the dataset the evaluation reads.
        calib_images: training images that calibrate the int8 runtimes.
        val_split: share of the training images held out as ``val`` (default 0.1), not used for calibration.
        on_note: receives the calibration's description and a line per deployment.
        max_drop: ``ov-int8`` only: NNCF's accuracy-aware quantization keeps int8 top-1 within this many points of
            fp32 on ``control_images`` val images (:func:`pfconvert.deploy.openvino.quantize_openvino`).
        control_images: val images for ``max_drop``.
    """
    from ..deploy.runtime import check_runtimes, deploy, is_int8

    names = check_runtimes(runtimes)
    note = on_note or (lambda _: None)
    calibrations: dict[tuple[int, ...], Calibration] = {}
    validations: dict[tuple[int, ...], Validation] = {}
    split = 0.1 if val_split is None else val_split
    if max_drop is not None and "ort-int8" in names:
        note("ort-int8: ONNX Runtime has no accuracy-aware quantization; --int8-max-drop applies to ov-int8 only")
    controlled = max_drop is not None and "ov-int8" in names

    def hook(model_name: str, model: nn.Module, data_cfg: DataConfig) -> list[tuple[str, nn.Module]]:
        size = tuple(data_cfg.input_size)
        calibration = None
        if any(is_int8(name) for name in names):
            if size not in calibrations:
                calibrations[size] = data_calibration(data, data_cfg, calib_images, split)
                note(calibrations[size].describe())
            calibration = calibrations[size]
        if controlled and size not in validations:
            validations[size] = data_validation(data, data_cfg, control_images, split)
            note(f"ov-int8: accuracy-controlled, at most {max_drop:g} top-1 points below fp32 on "
                 f"{validations[size].source}")
        out: list[tuple[str, nn.Module]] = []
        for name in names:
            note(f"deploying the {model_name} model on {name}")
            control = ({"max_drop": max_drop, "validation": validations[size]}
                       if controlled and name == "ov-int8" else {})
            deployed = deploy(model, name, size, calibration, **control)  # type: ignore[arg-type]
            if control:
                from ..deploy.openvino import fp32_weighted_layers

                kept = fp32_weighted_layers(deployed.prepared.payload)
                note(f"ov-int8: the {model_name} model keeps {len(kept)} weighted layer(s) in fp32: "
                     f"{', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''}")
            out.append((deployed.label, deployed))
        return out

    return hook
