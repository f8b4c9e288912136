"""``pfconvert plan``: which conversion pays off on this backend? Search rules x stages, measure, choose."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import BackendError, RuleError
from . import _options as o
from ._console import err_console, out_console, say
from .app import app, on_interrupt

if TYPE_CHECKING:
    from ..study.plan import PlanResult

__all__ = ["plan_cmd", "DEFAULT_RULES"]

DEFAULT_RULES = ("maxpool", "dw-hybrid", "dw-hybrid-keepnorm", "bottleneck-max", "bottleneck-hybrid", "basic-max",
                 "vit-max")
"""The built-in rules tried when no --rule is given (those that match nothing in the model are skipped)."""


def _ratio(value: float, verdict: str, margin: float | None = None) -> str:
    """``0.94 ±0.03``: the ratio and its noise margin (absolute), green when faster, red when slower."""
    text = f"{value:.2f}" + (f" ±{value * margin:.2f}" if margin is not None else "")
    color = {"faster": "green", "slower": "red"}.get(verdict)
    return f"[{color}]{text}[/]" if color else text


def _table(result: PlanResult) -> Table:
    table = Table(title=f"original: top-1 {result.base_top1:.2f}% (validation), {result.base_params / 1e6:.2f}M params, "
                        f"{result.base_macs / 1e6:.1f}M MACs; latency ratios on {escape(result.backend_label)}, each "
                        "measured side by side with the original, ± its noise margin (green: faster, red: slower, "
                        "beyond it); candidates within the noise of the fastest count as equally fast and the most "
                        "accurate of them is chosen",
                  title_justify="left")
    proxied = result.proxy is not None
    for col in ("candidate", "layers", *(("before proxy",) if proxied else ()), "top-1", "drop", *(f"latency bs{bs}" for bs in result.batch_sizes),
                "rounds", "params", "MACs", "Pareto", "pays off", "choice"):
        table.add_column(col, justify="left" if col in ("candidate", "choice") else "right")
    for c in sorted(result.candidates, key=lambda c: (c.worst_ratio, c.drop)):
        layers = f"{len(c.layers)}+{len(c.shrunk)}" if c.shrunk else str(len(c.layers))
        before = (f"{c.top1_before_proxy:.2f}" if c.top1_before_proxy is not None else "-",) if proxied else ()
        table.add_row(escape(c.name), layers, *before, f"{c.top1:.2f}", f"{c.drop:+.2f}",
                      *(_ratio(c.ratio(bs), c.verdicts[bs], c.margins.get(bs)) for bs in result.batch_sizes),
                      "/".join(str(c.rounds.get(bs, "?")) for bs in result.batch_sizes),
                      f"{c.params / 1e6:.2f}M", f"{c.macs / 1e6:.1f}M", "*" if c.pareto else "",
                      "yes" if c.pays_off else "no", "<- chosen" if c is result.chosen else "")
    notes = []
    if proxied:
        p = result.proxy or {}
        notes.append(f"top-1: after a proxy distillation from the original of {p.get('images')} training images per "
                     f"candidate ({p.get('share_of_3_epochs', 0):.1%} of a default 3-epoch fine-tune, lr "
                     f"{p.get('lr')}, seed {p.get('seed')}); 'before proxy': right after conversion and preparation")
    if result.shrinkable:
        notes.append(f"layers: converted+shrunk; shrink: {len(result.shrinkable)} conv(s) whose input map keeps kernel "
                     "taps out of play, replaced by the smaller conv they equal (exact)")
    if result.retiming is not None:
        notes.append(f"timing: {result.retiming.describe()}; rounds per batch size")
    table.caption = "\n".join(notes) or None
    table.caption_justify = "left"
    return table


def _ratios(text: str) -> list[float]:
    """``0.25,0.5`` -> [0.25, 0.5]; each strictly between 0 and 1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise RuleError(f"--prune-ratios must be comma-separated numbers between 0 and 1 (exclusive), got {text!r}")
    return values


def _step(status: object, notes: list[str], text: str) -> None:
    while notes:
        say(notes.pop(0))
    status.update(escape(text))  # type: ignore[attr-defined]


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    model: o.ModelArg,
    data: o.DataOpt,
    backend: Annotated[str, typer.Option(help="Where the latency counts: cpu (deployed PyTorch), cpu-eager, ort, "
                                              "ort-int8, ov, ov-int8 (OpenVINO), cuda, cuda-amp. On an int8 backend "
                                              "the candidates are scored in int8.")] = "cpu",
    rule: Annotated[Optional[list[str]], typer.Option("--rule", "-r", help="Candidate rule (repeatable; default: "
                                                      + ", ".join(DEFAULT_RULES) + ").")] = None,
    max_drop: Annotated[float, typer.Option(min=0.0, callback=o.finite, help="Top-1 points the chosen conversion may cost.")] = 1.0,
    write_rule: Annotated[Optional[Path], typer.Option(help="Write the chosen candidate's rule file here.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of accuracy vs latency here (a .png file).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --write-rule / --plot files.")] = False,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to time, comma-separated.")] = "1,32",
    checkpoint: o.CheckpointOpt = None,
    pretrained: o.PretrainedOpt = False,
    pretrained_file: o.PretrainedFileOpt = None,
    num_classes: o.NumClassesOpt = None,
    in_chans: o.InChansOpt = None,
    kwarg: o.KwargOpt = None,
    input_size: o.SideSizeOpt = None,
    img_size: o.ImgSizeOpt = None,
    interpolation: o.InterpolationOpt = None,
    crop_pct: o.CropPctOpt = None,
    crop_mode: o.CropModeOpt = None,
    mean: o.MeanOpt = None,
    std: o.StdOpt = None,
    limit: o.LimitOpt = 2000,
    limit_val: o.LimitValOpt = None,
    val_split: o.ValSplitOpt = 0.1,
    bn_recalib_images: o.BnRecalibOpt = 512,
    reconstruct_images: Annotated[int, typer.Option(min=0, help="Refit the layers reading each replacement on N "
                                                                "training images (0: off).")] = 256,
    batch_size: o.EvalBatchSizeOpt = 64,
    calib_images: Annotated[int, typer.Option(min=1, help="int8 backends: training images that calibrate the "
                                              "quantization of the original and of each candidate.")] = 300,
    runs: Annotated[int, typer.Option(min=3, help="Interleaved timing rounds per batch size.")] = 10,
    max_seconds: Annotated[float, typer.Option(min=1.0, callback=o.finite,
                                               help="Time budget of the rounds of one batch size.")] = 20.0,
    retime_passes: Annotated[int, typer.Option(min=0, help="At most N extra timing passes of the close calls (verdicts "
                                                           "out of ratio order, or within the noise), with the "
                                                           "original, their rounds pooled (0: none).")] = 3,
    retime_seconds: Annotated[float, typer.Option(min=0.0, callback=o.finite, help="Start no re-timing pass after this many seconds of "
                                                                "re-timing.")] = 120.0,
    shrink: Annotated[bool, typer.Option(help="Shrink the convs whose input map keeps kernel taps out of play (a 3x3 "
                                              "conv on a 1x1 map) to the smaller conv they equal, in every "
                                              "candidate and as a candidate of its own (exact).")] = True,
    prune: Annotated[bool, typer.Option(help="Add channel pruning (Torch-Pruning, pfconvert[prune]) at each "
                                             "--prune-ratios as candidates alone and after every rule x stage "
                                             "candidate.")] = False,
    prune_ratios: Annotated[str, typer.Option(help="Channel-pruning ratios tried with --prune, comma-separated.")
                            ] = "0.25,0.5",
    prune_round_to: Annotated[int, typer.Option(min=1, help="Pruned channel counts are kept multiples of N.")] = 8,
    prune_importance: Annotated[str, typer.Option(help="Which channels --prune removes: l1 (smallest L1 norm of a "
                                                       "channel's weights) or group-norm (Torch-Pruning's group L2 "
                                                       "norm over every layer the channel couples).")] = "l1",
    prune_global: Annotated[bool, typer.Option(help="With --prune: rank all layers' channels together (each ratio "
                                                    "is the share of all channels; no layer loses more than 0.8 of "
                                                    "its own) instead of the same ratio in every layer.")] = False,
    proxy_images: Annotated[int, typer.Option(min=0, help="Score each candidate after a short distillation from the "
                                                          "original on N training images (the fine-tune's loss, "
                                                          "augmentation and schedule; a proxy of the fine-tuned "
                                                          "result); 0: score right after conversion.")] = 2048,
    as_json: o.JsonOpt = False,
) -> None:
    """Search built-in rules x stage subsets, measure accuracy (validation split) and latency (BACKEND, side by side
    with the original; close calls timed again), print the Pareto table, and write the best rule within --max-drop
    that is faster than the original without being slower at any batch size (of those equally fast within the noise,
    the most accurate). Exits 1 with "no conversion pays off" when none is."""
    from ._outputs import check_outputs

    check_outputs({"--write-rule": (write_rule, "rule.yaml"), "--plot": (plot, "plan.png")}, overwrite)
    sizes = o.parse_int_list(batch_sizes, "--batch-sizes")
    written: list[str] = []
    on_interrupt(lambda: "plan stopped by Ctrl-C; " + (f"wrote only {', '.join(written)}" if written else
                                                       "nothing was written"))
    ratios = _ratios(prune_ratios) if prune else []
    if not prune and (prune_importance != "l1" or prune_global):
        raise RuleError("--prune-importance and --prune-global choose how --prune prunes; add --prune")
    from ..conversion.pruning import check_prune_method

    check_prune_method(prune_importance, prune_global, where="--prune-importance")
    overrides = o.data_overrides(interpolation, crop_pct, crop_mode, mean, std)
    size = o.side_size(input_size, img_size)
    limit = o.renamed("--limit-val", limit_val, "--limit", limit, ctx)
    from .._files import write_text
    from ..report.backends import list_backends
    from ..rules.loading import load_rules
    from ..study.plan import PlanRefused, plan_on_data, plot_plan

    if backend not in list_backends():
        from ..report.backends import get_backend

        get_backend(backend)  # says why (an unknown name, or the package to install)
        raise BackendError(f"backend '{backend}' is not available here; choose one of {', '.join(list_backends())}")
    candidates = [load_rules(r) for r in (rule or DEFAULT_RULES)]
    original, data_cfg, side = o.study_original(model, checkpoint, pretrained, pretrained_file, overrides,
                                                o.model_kwargs(num_classes, in_chans, kwarg), size,
                                                {"--batch-sizes": sizes, "--batch-size": [batch_size]})
    notes: list[str] = []
    failure: PlanRefused | None = None
    with err_console.status("reading the data...") as status:
        try:
            result = plan_on_data(original, candidates, data, backend=backend, batch_sizes=sizes, max_drop=max_drop,
                                  data_cfg=data_cfg, img_size=side, limit_val=limit,
                                  bn_recalib_images=bn_recalib_images, reconstruct_images=reconstruct_images,
                                  val_split=val_split, batch_size=batch_size, runs=runs, max_seconds=max_seconds,
                                  notes=notes, on_step=lambda text: _step(status, notes, text),
                                  int8_calib_images=calib_images, shrink=shrink, retime_passes=retime_passes,
                                  retime_seconds=retime_seconds, prune_ratios=ratios, prune_round_to=prune_round_to,
                                  prune_importance=prune_importance, prune_global=prune_global,
                                  proxy_images=proxy_images)
        except PlanRefused as exc:  # the table is printed from what was measured, then the refusal (exit 1)
            failure, result = exc, exc.result
    for name, why in result.skipped.items():
        say(f"rule {name}: no candidate ({why})")
    if as_json:
        out_console.print_json(o.json_text(result.to_dict()))
    else:
        out_console.print(_table(result))
    if plot is not None:
        say(f"wrote {plot_plan(result, plot)}")
        written.append(str(plot))
    if failure is not None:
        raise failure
    if write_rule is not None and result.chosen_rules is not None:
        write_text(write_rule, result.chosen_rules.text)
        written.append(str(write_rule))
        say(f"wrote {write_rule} ({result.chosen.name}): use it with `pfconvert convert {model} "  # type: ignore[union-attr]
            f"--rule {write_rule}`")
