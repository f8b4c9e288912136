"""``pfconvert sensitivity``: which stages (or layers) are worth converting? Convert one at a time and measure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import RuleError
from . import _options as o
from ._console import err_console, out_console, say
from .app import app, on_interrupt

if TYPE_CHECKING:
    from ..study.sensitivity import SensitivityResult

__all__ = ["sensitivity_cmd"]


def _table(result: SensitivityResult, max_drop: float | None, method: str) -> Table:
    table = Table(title=f"original: top-1 {result.base_top1:.2f}%, {result.base_latency_ms:.2f} ms (batch 1, "
                        f"PyTorch CPU deployed with {escape(method)}, as the report; each ratio measured side by side with "
                        "the original)", title_justify="left")
    for col in ("rank", "group", "layers", "top-1", "drop", "latency", "latency ratio", "params removed", "convert?"):
        table.add_column(col, justify="left" if col in ("group", "convert?") else "right")
    for i, g in enumerate(result.ranked()):
        ok = "" if max_drop is None else ("yes" if g.drop <= max_drop else "no")
        ratio = f"[green]{g.latency_ratio:.2f}[/]" if g.latency_ratio < 0.97 else (
            f"[red]{g.latency_ratio:.2f}[/]" if g.latency_ratio > 1.03 else f"{g.latency_ratio:.2f}")
        table.add_row(str(i + 1), escape(g.group.label), str(len(g.layers)), f"{g.top1:.2f}", f"{g.drop:+.2f}",
                      f"{g.latency_ms:.2f} ms", ratio, f"{g.params_removed:,}", ok)
    return table


def _group(status: Any, notes: list[str], group: str, index: int, total: int) -> None:
    """Progress: the data notes once, then which group is being measured."""
    while notes:
        say(notes.pop(0))
    if index < 0:
        status.update("evaluating the original model on the validation split...")
    else:
        status.update(f"measuring group {index + 1}/{total}: {escape(group)} (convert, re-estimate BatchNorm, evaluate, time)")


@app.command("sensitivity")
def sensitivity_cmd(
    ctx: typer.Context,
    model: o.ModelArg,
    data: o.DataOpt,
    rule: o.RuleOpt = "maxpool",
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
    by: Annotated[str, typer.Option(help="Group layers by 'stage' or 'layer'.")] = "stage",
    limit: o.LimitOpt = 2000,
    limit_val: o.LimitValOpt = None,
    val_split: o.ValSplitOpt = 0.1,
    bn_recalib_images: o.BnRecalibOpt = 512,
    batch_size: o.EvalBatchSizeOpt = 64,
    max_drop: Annotated[Optional[float], typer.Option(callback=o.finite, help="Accuracy drop (points) a group may cost.")] = None,
    write_rule: Annotated[Optional[Path], typer.Option(help="Write a rule file converting only the groups within "
                                                            "--max-drop.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --write-rule file.")] = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Convert one stage (or layer) at a time, measure each one's accuracy drop and latency change, rank them."""
    if write_rule is not None and max_drop is None:
        raise RuleError("--write-rule needs --max-drop (the accuracy points a converted group may cost)")
    from ._outputs import check_outputs

    check_outputs({"--write-rule": (write_rule, "rule.yaml")}, overwrite)
    written: list[str] = []
    on_interrupt(lambda: "sensitivity stopped by Ctrl-C; " + (f"wrote {written[0]}" if written else
                                                              "nothing was written"))
    overrides = o.data_overrides(interpolation, crop_pct, crop_mode, mean, std)
    size = o.side_size(input_size, img_size)
    limit = o.renamed("--limit-val", limit_val, "--limit", limit, ctx)
    from .._files import write_text
    from ..rules.loading import load_rules
    from ..study.sensitivity import selected_rules, sensitivity_on_data

    rules = load_rules(rule)
    original, data_cfg, side = o.study_original(model, checkpoint, pretrained, pretrained_file, overrides,
                                                o.model_kwargs(num_classes, in_chans, kwarg), size,
                                                {"--batch-size": [batch_size]})
    notes: list[str] = []
    with err_console.status("reading the data...") as status:
        result = sensitivity_on_data(original, rules, data, data_cfg=data_cfg, img_size=side, by=by,
                                     limit_val=limit, bn_recalib_images=bn_recalib_images, val_split=val_split,
                                     batch_size=batch_size, notes=notes,
                                     on_group=lambda g, i, n: _group(status, notes, g, i, n))
    if write_rule is not None and max_drop is not None:
        write_text(write_rule, selected_rules(rules, result, max_drop).text)
        written.append(str(write_rule))
        say(f"wrote {write_rule}: use it with `pfconvert convert {model} --rule {write_rule}`")
    if as_json:
        out_console.print_json(o.json_text(result.to_dict()))
        return
    out_console.print(_table(result, max_drop, result.deploy_method))
