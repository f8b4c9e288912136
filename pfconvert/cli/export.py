"""``pfconvert export``: write an artifact's model as ONNX and check it against PyTorch with ONNX Runtime."""

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
    format: Annotated[str, typer.Option("--format", "-f", help="Output format (onnx).")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default: ARTIFACT/model.onnx).")]
    = None,
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
    if format.lower() != "onnx":
        raise PfconvertError(f"--format {format!r} is not supported; the supported format is onnx")
    from ..conversion.artifact import artifact_data_config, load_artifact
    from ..deploy.onnx import export_onnx

    art = load_artifact(artifact, weights=weights)
    target = out or art.path / "model.onnx"
    trained = art.weights_file.name != "model.safetensors"  # fine-tuned weights: fed as fine-tuned
    data_cfg, origin = artifact_data_config(art.path, art.recipe, art.model, trained=trained)
    say(f"input: {data_cfg.describe()} ({origin})")
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
