"""``pfconvert eval``: top-1 / top-5 accuracy of an artifact's model on a dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import PfconvertError
from . import _options as o
from ._console import err_console, out_console, say
from .app import app, on_interrupt

if TYPE_CHECKING:
    from ..recover.finetune.api import EvalReport

__all__ = ["eval_command", "eval_table"]


@app.command("eval")
def eval_command(
    artifact: o.ArtifactArg,
    data: o.DataOpt,
    split: Annotated[str, typer.Option("--split", help="test (the figures: t10k files, test/ folder, else val/), val "
                                       "(the split fine-tuning selected on, carved from the training images) or "
                                       "train.")] = "test",
    weights: Annotated[str, typer.Option("--weights", help="auto (fine-tuned when present), converted or "
                                         "finetuned.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 128,
    input_size: Annotated[Optional[str], typer.Option(
        "--input-size", help="Input height and width N in pixels, or C,N,N (default: the artifact's).",
        show_default=False)] = None,
    img_size: o.ImgSizeOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a fixed random subset of N "
                                                 "images.", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data-loading worker processes.")] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    original: Annotated[bool, typer.Option("--original", help="Also evaluate the original (unconverted) "
                                           "model.")] = False,
    val_split: Annotated[Optional[float], typer.Option("--val-split", min=0.0, max=0.99, callback=o.finite,
                                                       help="Share of the training "
                                                       "images that is the val split (default: the fine-tune's, else "
                                                       "0.1).", show_default=False)] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Also evaluate the model(s) as deployed on "
                                                   "these runtimes, comma-separated: ort, ort-int8, ov, ov-int8 "
                                                   "(top-1 of the deployed model, next to PyTorch's).",
                                                   show_default=False)] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", min=1, help="int8 backends: training images that "
                                              "calibrate the quantization.")] = 300,
    int8_max_drop: Annotated[Optional[float], typer.Option("--int8-max-drop", min=0.0, callback=o.finite,
                                                           help="ov-int8: NNCF's accuracy-aware quantization: layers "
                                                           "go back to fp32 until the int8 top-1 is at most this many "
                                                           "points below fp32 on --control-images val images.",
                                                           show_default=False)] = None,
    control_images: Annotated[int, typer.Option("--control-images", min=1, help="--int8-max-drop: val images the "
                                                "drop is measured on.")] = 1000,
    json_out: o.JsonOpt = False,
) -> None:
    """Evaluate the artifact's model (fine-tuned weights when present): top-1, top-5 and loss, on the test split by
    default, with the images fed as the model was fine-tuned (else as recorded at conversion). With --backend, also
    the model as deployed on each runtime (int8 ones calibrated on --calib-images training images)."""
    from ..recover.dist import env_rank
    from ..recover.finetune.api import evaluate_artifact
    from .progress import RichPhases

    side = o.artifact_side(o.side_size(input_size, img_size), artifact)
    if int8_max_drop is not None and "ov-int8" not in (backend or "").split(","):
        raise PfconvertError("--int8-max-drop controls the ov-int8 backend's quantization; add --backend ov-int8, or "
                             "drop --int8-max-drop")
    if int8_max_drop is not None and split == "val":
        say("--int8-max-drop measures its drop on val images, which this evaluation reads too: the accuracy-controlled "
            "row is optimistic here (evaluate on --split test)")
    deploy = _deployer(backend, data, calib_images, val_split, int8_max_drop, control_images) if backend else None
    on_interrupt(lambda: "eval stopped by Ctrl-C; nothing was written (eval writes no files)")
    report = evaluate_artifact(artifact, data, split=split, weights=weights, batch_size=batch_size,
                               img_size=side, limit=limit, workers=workers, device=device, original=original,
                               val_split=val_split, progress=RichPhases(err_console, quiet=env_rank() != 0),
                               on_note=say if env_rank() == 0 else None, deploy=deploy)
    if env_rank() != 0:  # under torchrun every process evaluates a shard; rank 0 prints the total
        return
    if json_out:
        out_console.print_json(o.json_text(report.to_dict()))
    else:
        out_console.print(eval_table(report))


def eval_table(report: EvalReport) -> Table:
    """One row per evaluated model, with the weights it was loaded from."""
    size = "x".join(str(v) for v in report.input_size)
    split = report.split_description or report.split
    table = Table(title=escape(f"{report.data}, {split}; input {size}"), title_justify="left")
    for column in ("model", "weights", "top-1 %", "top-5 %", "loss", "images"):
        table.add_column(column, justify="left" if column in ("model", "weights") else "right")
    for name, metrics in report.metrics.items():
        weights = report.weights if name.startswith("student") else "original weights"
        table.add_row(escape(name), escape(weights), f"{metrics.top1:.2f}", f"{metrics.top5:.2f}",
                      f"{metrics.loss:.4f}", str(metrics.count))
    return table


def _deployer(backends: str, data: str, calib_images: int, val_split: float | None, max_drop: float | None = None,
              control_images: int = 1000) -> object:
    """``evaluate_artifact``'s ``deploy`` hook for ``--backend`` (:func:`pfconvert.study.deployed.data_deployer`):
    the names (and that their runtimes are installed) are checked now."""
    from ..study.deployed import data_deployer

    return data_deployer(backends.split(","), data, calib_images, val_split,
                         on_note=lambda line: err_console.print(escape(line), highlight=False), max_drop=max_drop,
                         control_images=control_images)
