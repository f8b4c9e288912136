"""``pfconvert export``: write an artifact's model as ONNX (checked against PyTorch with ONNX Runtime) or OpenVINO IR
(fp32 checked numerically; ``--int8`` quantized by NNCF on images of ``--data`` and checked by top-1 agreement)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import PfconvertError
from . import _options as o
from ._console import err_console, out_console, say
from .app import app, on_interrupt

__all__ = ["export_cmd"]

EXPORTERS = ("dynamo", "torchscript", "auto")  # pfconvert.deploy.onnx.EXPORTERS, named here without importing torch


@app.command("export")
def export_cmd(
    artifact: o.ArtifactArg,
    format: Annotated[str, typer.Option("--format", "-f", help="Output format: onnx, or openvino (IR .xml + .bin; "
                                        "needs pip install 'pfconvert[openvino]').")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default: ARTIFACT/model.onnx, "
                                                "ARTIFACT/model.xml or ARTIFACT/model-int8.xml).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="openvino: quantize to int8 with NNCF, calibrated on --data "
                                       "(random inputs without it: the int8 accuracy is then unknown).")] = False,
    data: Annotated[Optional[str], typer.Option("--data", help="--int8: calibration images (training split) and "
                                                "check images (validation split) of this dataset.")] = None,
    calib_images: Annotated[int, typer.Option(min=1, help="--int8: calibration images.")] = 300,
    check_images: Annotated[int, typer.Option(min=1, help="--int8: validation images the int8 top-1 is checked "
                                              "on.")] = 200,
    min_agreement: Annotated[float, typer.Option(min=0.0, max=1.0, callback=o.finite, help="--int8: share of the check images on which "
                                                 "the int8 and PyTorch top-1 must agree.")] = 0.9,
    int8_max_drop: Annotated[Optional[float], typer.Option("--int8-max-drop", min=0.0, callback=o.finite,
                                                           help="--int8: NNCF's accuracy-aware quantization: layers "
                                                           "go back to fp32 until the int8 top-1 is at most this many "
                                                           "points below fp32 on --control-images validation images "
                                                           "of --data.", show_default=False)] = None,
    control_images: Annotated[int, typer.Option(min=1, help="--int8-max-drop: validation images the drop is measured "
                                                "on (other than the check images).")] = 1000,
    opset: Annotated[int, typer.Option(min=7, help="ONNX opset version.")] = 18,
    dynamic_batch: Annotated[bool, typer.Option(help="Make the batch dimension dynamic.")] = False,
    exporter: Annotated[str, typer.Option(help=f"torch.onnx exporter: {', '.join(EXPORTERS)}.")] = "dynamo",
    weights: Annotated[str, typer.Option(help="auto (fine-tuned if present), converted or finetuned.")] = "auto",
    tolerance: Annotated[float, typer.Option(min=0.0, callback=o.finite, help="Max abs difference ONNX Runtime vs PyTorch accepted.")]
    = 1e-3,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch on a random input.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Export ARTIFACT's model to ONNX, then run ONNX Runtime and PyTorch on the same input and compare."""
    kind = format.lower()
    if kind not in ("onnx", "openvino"):
        raise PfconvertError(f"--format {format!r} is not supported; choose onnx or openvino")
    if kind == "onnx" and (int8 or data is not None):
        raise PfconvertError("--int8 and --data apply to --format openvino; drop them, or pass --format openvino")
    if kind == "openvino" and data is not None and not int8:
        raise PfconvertError("--data calibrates an int8 export; add --int8, or drop --data")
    if int8_max_drop is not None and (kind != "openvino" or not int8 or data is None):
        raise PfconvertError("--int8-max-drop bounds the drop of an int8 OpenVINO export on labelled images: pass "
                             "--format openvino --int8 --data PATH, or drop --int8-max-drop")
    if kind == "openvino":
        from ..deploy._deps import require

        require("openvino", "--format openvino")
        if int8:
            require("nncf", "--format openvino --int8")
    from ..conversion.artifact import artifact_data_config, load_artifact

    art = load_artifact(artifact, weights=weights)
    default_name = {"onnx": "model.onnx", "openvino": "model-int8.xml" if int8 else "model.xml"}[kind]
    target = out or art.path / default_name
    trained = art.weights_file.name != "model.safetensors"  # fine-tuned weights: fed as fine-tuned
    data_cfg, origin = artifact_data_config(art.path, art.recipe, art.model, trained=trained)
    say(f"input: {data_cfg.describe()} ({origin})")
    if kind == "openvino":
        _export_openvino(art, target, data_cfg, int8=int8, data=data, calib_images=calib_images,
                         check_images=check_images, max_drop=int8_max_drop, control_images=control_images,
                         min_agreement=min_agreement, dynamic_batch=dynamic_batch,
                         tolerance=tolerance, check=check, overwrite=overwrite, as_json=as_json)
        return
    from ..deploy.onnx import export_onnx

    started = time.time()
    on_interrupt(lambda: f"export stopped by Ctrl-C after writing {target} (its check with ONNX Runtime did not finish)"
                 if target.is_file() and target.stat().st_mtime >= started else "export stopped by Ctrl-C; nothing was "
                 "written")
    with err_console.status(escape(f"exporting {art.recipe.model} to {target}, then checking it with ONNX Runtime...")):
        result = export_onnx(art.model, target, data_cfg.input_size, opset=opset,
                             dynamic_batch=dynamic_batch, exporter=exporter, check=check, tolerance=tolerance,
                             overwrite=overwrite)
    if as_json:
        out_console.print_json(o.json_text({
            "path": str(result.path), "exporter": result.exporter, "opset": result.opset,
            "dynamic_batch": result.dynamic_batch, "max_abs_diff": result.max_abs_diff,
            "tolerance": result.tolerance, "size_bytes": result.size_bytes}))
        return
    check_text = (f"max abs diff vs PyTorch {result.max_abs_diff:.2e} (tolerance {result.tolerance:g})"
                  if result.max_abs_diff is not None else "not checked (--no-check)")
    out_console.print(f"{result.path}\t{result.size_bytes / 1e6:.1f} MB\topset {result.opset}\t"
                      f"{result.exporter} exporter\t{check_text}", markup=False, highlight=False, soft_wrap=True)


def _export_openvino(art: object, target: Path, data_cfg: object, *, int8: bool, data: str | None,
                     calib_images: int, check_images: int, min_agreement: float, dynamic_batch: bool,
                     tolerance: float, check: bool, overwrite: bool, as_json: bool, max_drop: float | None = None,
                     control_images: int = 1000) -> None:
    """``--format openvino``: calibration, check (and control) images from ``data``, export, check, print."""
    from ..deploy.openvino import export_openvino
    from ..deploy.quantize import Calibration, Validation

    calibration = check_inputs = validation = None
    check_source = ""
    if int8 and data is not None:
        from ..data.calibration import calibration_images, labelled_images

        extra = control_images if max_drop is not None else 0
        with err_console.status(f"reading {calib_images} calibration and {check_images + extra} validation "
                                "images..."):
            images, source = calibration_images(data, data_cfg, calib_images, split="train")  # type: ignore[arg-type]
            calibration = Calibration.from_tensor(images, source)
            val_images, labels, val_source = labelled_images(data, data_cfg, check_images + extra)  # type: ignore[arg-type]
        check_inputs = val_images[:check_images]
        check_source = val_source if not extra else f"{len(check_inputs)} of the {val_source}"
        if max_drop is not None:
            if len(val_images) <= check_images:
                raise PfconvertError(f"--int8-max-drop: {data} has {len(val_images)} validation images, all taken by "
                                     "--check-images; lower --check-images")
            validation = Validation.from_tensors(val_images[check_images:], labels[check_images:],
                                                 f"{len(val_images) - check_images} other images of the {val_source}")
            say(f"int8 accuracy-controlled: at most {max_drop:g} top-1 points below fp32 on {validation.source}")
        say(calibration.describe())
    elif int8:
        err_console.print("no --data: int8 calibrated on random inputs; the int8 accuracy is unknown (pass --data to "
                          "calibrate on your images)", highlight=False)
    what = "quantizing with NNCF, " if int8 else ""
    model_name = art.recipe.model  # type: ignore[attr-defined]
    on_interrupt(lambda: f"export stopped by Ctrl-C; {target} may be incomplete: remove it or export again "
                 "with --overwrite")
    with err_console.status(escape(f"exporting {model_name} to {target}, {what}then checking it with OpenVINO...")):
        result = export_openvino(art.model, target, data_cfg.input_size, int8=int8,  # type: ignore[attr-defined]
                                 calibration=calibration, check_inputs=check_inputs, check_source=check_source,
                                 check=check, tolerance=tolerance, min_agreement=min_agreement,
                                 dynamic_batch=dynamic_batch, overwrite=overwrite, max_drop=max_drop,
                                 validation=validation)
    if result.fp32_layers is not None:
        say(f"int8 keeps {len(result.fp32_layers)} weighted layer(s) in fp32: {', '.join(result.fp32_layers[:6])}"
            f"{' ...' if len(result.fp32_layers) > 6 else ''}")
    if as_json:
        out_console.print_json(o.json_text({
            "path": str(result.xml), "bin": str(result.bin), "format": "openvino", "int8": result.int8,
            "dynamic_batch": dynamic_batch, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
            "top1_agreement": result.agreement, "min_agreement": result.min_agreement,
            "check_images": result.check_images, "check_source": result.check_source,
            "calibration": result.calibration, "calibration_synthetic": result.calibration_synthetic,
            "int8_max_drop": result.max_drop, "fp32_layers": result.fp32_layers,
            "size_bytes": result.size_bytes}))
        return
    if not check:
        check_text = "not checked (--no-check)"
    elif result.int8:
        check_text = (f"int8 top-1 agrees with PyTorch on {result.agreement:.1%} of {result.check_source}"
                      + (f" (minimum {result.min_agreement:.0%})" if result.min_agreement is not None else ""))
    else:
        check_text = f"max abs diff vs PyTorch {result.max_abs_diff:.2e} (tolerance {result.tolerance:g})"
    out_console.print(f"{result.xml}\t{result.size_bytes / 1e6:.1f} MB\t{'int8 (NNCF)' if result.int8 else 'fp32'}\t"
                      f"{check_text}", markup=False, highlight=False, soft_wrap=True)
