"""``pfconvert report``: params, MACs, memory and measured latency of an original and a converted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..deploy.methods import method_help
from ..errors import PfconvertError
from ..report.backends import get_backend, list_backends
from . import _options as o
from ._console import err_console, out_console, say
from .app import app, on_interrupt

__all__ = ["report_cmd"]


@app.command("report")
def report_cmd(
    original: Annotated[str, typer.Argument(help="Original model: a timm name, or an artifact directory (alone: "
                                                 "compare the artifact against its original).")],
    converted: Annotated[Optional[str], typer.Argument(help="Converted model: a timm name or artifact directory.")]
    = None,
    rule: Annotated[Optional[str], typer.Option("--rule", "-r", help="Convert ORIGINAL with this rule and compare.")]
    = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to time, comma-separated.")] = "1,32",
    backends: Annotated[Optional[str], typer.Option(
        help=f"Backends, comma-separated, of {', '.join(list_backends(available_only=False))} (default: all that are "
             "available here).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed rounds per backend and batch size.")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forwards per model first.")] = 3,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: torch's setting).")] = None,
    max_seconds: Annotated[float, typer.Option(min=0.0, callback=o.finite,
                                               help="Time budget per backend and batch size.")] = 30.0,
    deploy: Annotated[str, typer.Option(help=f"How the 'cpu' backend deploys both models: auto (the first available "
                                             f"of llga, jit, compile, eager) or one of: {method_help()}.")] = "auto",
    input_size: o.InputSizeOpt = None,
    num_classes: o.NumClassesOpt = None,
    kwarg: o.KwargOpt = None,
    accuracy_original: Annotated[Optional[float], typer.Option(
        callback=o.finite, help="Known top-1 of the original (for the plot).")] = None,
    accuracy_converted: Annotated[Optional[float], typer.Option(
        callback=o.finite, help="Known top-1 of the converted model.")] = None,
    memory: Annotated[bool, typer.Option(help="Measure peak memory.")] = True,
    int8: Annotated[bool, typer.Option("--int8", help="Also time the int8 backends (ort-int8, and ov-int8 where "
                                       "OpenVINO is installed) when --backends is not given.")] = False,
    data: Annotated[Optional[str], typer.Option("--data", help="Calibrate the int8 backends on training images of "
                                                "this dataset and measure top-1 of both models in PyTorch (fp32) "
                                                "and on each int8 backend, side by side.", show_default=False)] = None,
    calib_images: Annotated[int, typer.Option(min=1, help="--data: training images that calibrate int8.")] = 300,
    eval_images: Annotated[int, typer.Option(min=1, help="--data: test images the top-1 is measured on.")] = 1000,
    int8_max_drop: Annotated[Optional[float], typer.Option("--int8-max-drop", min=0.0, callback=o.finite,
                                                           help="--data: ov-int8 with NNCF's accuracy-aware "
                                                           "quantization: layers go back to fp32 until the int8 top-1 "
                                                           "is at most this many points below fp32 on --control-images "
                                                           "val images; that model is the one timed.",
                                                           show_default=False)] = None,
    control_images: Annotated[int, typer.Option("--control-images", min=1, help="--int8-max-drop: val images the "
                                                "drop is measured on.")] = 1000,
    as_json: o.JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown on stdout instead of tables.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a PNG plot to this file.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --plot file.")] = False,
) -> None:
    """Compare ORIGINAL and CONVERTED: params, MACs (convention stated), peak memory, latency per backend."""
    if as_json and markdown:
        raise PfconvertError("--json and --markdown both print on stdout; choose one")
    sizes = o.parse_int_list(batch_sizes, "--batch-sizes")
    chosen = [b.strip() for b in backends.split(",") if b.strip()] if backends else None
    for name in chosen or []:
        get_backend(name)  # an unknown or unavailable backend fails before models are built
    if int8_max_drop is not None:
        from ..report.backends import default_backends

        if data is None:
            raise PfconvertError("--int8-max-drop measures the int8 drop on labelled images: add --data PATH, or drop "
                                 "--int8-max-drop")
        if "ov-int8" not in (chosen if chosen is not None else default_backends(int8=int8)):
            raise PfconvertError("--int8-max-drop controls the ov-int8 backend's quantization: add ov-int8 to "
                                 "--backends (or --int8 with OpenVINO installed), or drop --int8-max-drop")
    kwargs = o.model_kwargs(num_classes, None, kwarg)
    size = o.parse_input_size(input_size)
    from ..deploy.methods import resolve_method
    from ..report.plot import check_plot_target

    resolve_method(deploy)  # an unknown method fails before models are built
    if plot is not None:
        check_plot_target(plot, overwrite)
    on_interrupt(lambda: "report stopped by Ctrl-C; nothing was written")
    from .._inputs import check_input
    from ..conversion.models import input_size as model_input_size
    from ..report.pairs import resolve_pair
    from ..report.run import run_report

    with err_console.status("loading models...") as status:
        pair = resolve_pair(original, converted, rule, kwargs)
        if pair.compared:
            say(pair.compared)
        if pair.note and size is None:
            say(pair.note)
        run_size = (size.shape(model_input_size(pair.original)[0]) if size is not None else
                    pair.input_size or model_input_size(pair.original))
        for model, name in zip((pair.original, pair.converted), pair.names):
            check_input(model, run_size, {"--batch-sizes": sizes}, what=name,
                        fix="give an --input-size the model takes" if size else "")
        calibration, accuracy, prepared = None, None, None
        if data is not None:
            calibration, accuracy, prepared = _data_accuracy(pair, data, run_size, chosen, int8, calib_images,
                                                             eval_images, threads, status, int8_max_drop,
                                                             control_images)
        result = run_report(pair.original, pair.converted, names=pair.names,
                            input_size=run_size, batch_sizes=sizes,
                            backends=chosen, runs=runs, warmup=warmup, threads=threads, max_seconds=max_seconds,
                            deploy_method=deploy, accuracies=(accuracy_original, accuracy_converted), memory=memory,
                            progress=lambda text: status.update(f"measuring: {escape(text)}..."), int8=int8,
                            calibration=calibration, accuracy=accuracy, prepared=prepared)
    if as_json:
        typer.echo(result.to_json())
    elif markdown:
        typer.echo(result.to_markdown(), nl=False)
    else:
        from ._report_render import render_report

        out_console.print(render_report(result))
    if plot is not None:
        from ..report.plot import plot_report

        say(f"wrote {plot_report(result, plot, overwrite=overwrite)}")


def _data_accuracy(pair: object, data: str, size: tuple[int, int, int], chosen: list[str] | None, int8: bool,
                   calib_images: int, eval_images: int, threads: int | None, status: object,
                   max_drop: float | None = None, control_images: int = 1000,
                   ) -> tuple[object, dict[str, dict[str, float]], dict[str, dict[str, object]]]:
    """``--data``: the calibration of the int8 backends (training images, fed as the models are), both models
    quantized once for each int8 backend timed (ov-int8 accuracy-controlled with ``max_drop``), and their top-1 in
    PyTorch and on each of those backends, on ``eval_images`` test images. The quantized models are returned to be
    timed: the report times the models it evaluated."""
    from ..data.config import resolve_data_config
    from ..report.backends import default_backends, is_int8
    from ..study.deployed import accuracy_on_runtimes, data_calibration, data_validation, prepare_runtimes

    cfg = pair.data_config  # type: ignore[attr-defined]
    if cfg is None:
        cfg = resolve_data_config(pair.original, input_size=size)  # type: ignore[attr-defined]
    elif tuple(cfg.input_size) != tuple(size):
        cfg = cfg.with_size(size[1], size[2])
    status.update(f"reading {calib_images} calibration images...")  # type: ignore[attr-defined]
    calibration = data_calibration(data, cfg, calib_images)
    runtimes = [b for b in (chosen if chosen is not None else default_backends(int8=int8)) if is_int8(b)]
    models = {"original": pair.original, "converted": pair.converted}  # type: ignore[attr-defined]
    step = lambda text: status.update(f"{escape(text)}...")  # type: ignore[attr-defined]  # noqa: E731
    validation = None
    if max_drop is not None:
        status.update(f"reading {control_images} validation images...")  # type: ignore[attr-defined]
        validation = data_validation(data, cfg, control_images)
        say(f"ov-int8: accuracy-controlled, at most {max_drop:g} top-1 points below fp32 on {validation.source}")
    prepared = prepare_runtimes(models, runtimes, size, calibration, max_drop=max_drop, validation=validation,
                                on_step=step)
    accuracy = accuracy_on_runtimes(models, runtimes, data, cfg, limit=eval_images, calibration=calibration,
                                    threads=threads, on_step=step, prepared=prepared)
    return calibration, accuracy, prepared
