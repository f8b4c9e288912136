"""``pfconvert sensitivity``: which stages (or layers) are worth converting? Convert one at a time and measure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table
from torch import nn

from ..deploy import resolve_method
from ..errors import DataError, RuleError
from ..finetune.bn import recalibrate_batchnorm
from ..finetune.data import build_transforms, eval_loader, model_data_config
from ..finetune.datasets import open_split, resolve_source
from ..finetune.evaluate import evaluate
from ..finetune.precision import resolve_precision
from ..report.latency import LatencyConfig, measure, median_ms
from ..rules import load_rules
from ..sensitivity import SensitivityResult, run_sensitivity, selected_rules
from ..zoo import create_model
from . import _options as o
from ._console import err_console, out_console
from .app import app

__all__ = ["sensitivity_cmd"]


def _table(result: SensitivityResult, max_drop: float | None) -> Table:
    table = Table(title=f"original: top-1 {result.base_top1:.2f}%, {result.base_latency_ms:.2f} ms (batch 1, "
                        f"PyTorch CPU deployed with {resolve_method('auto')}, as the report; each ratio measured side "
                        "by side with the original)", title_justify="left")
    for col in ("rank", "group", "layers", "top-1", "drop", "latency", "latency ratio", "params removed", "convert?"):
        table.add_column(col, justify="left" if col in ("group", "convert?") else "right")
    for i, g in enumerate(result.ranked()):
        ok = "" if max_drop is None else ("yes" if g.drop <= max_drop else "no")
        ratio = f"[green]{g.latency_ratio:.2f}[/]" if g.latency_ratio < 0.97 else (
            f"[red]{g.latency_ratio:.2f}[/]" if g.latency_ratio > 1.03 else f"{g.latency_ratio:.2f}")
        table.add_row(str(i + 1), g.group, str(len(g.layers)), f"{g.top1:.2f}", f"{g.drop:+.2f}",
                      f"{g.latency_ms:.2f} ms", ratio, f"{g.params_removed:,}", ok)
    return table


@app.command("sensitivity")
def sensitivity_cmd(
    model: o.ModelArg,
    data: Annotated[str, typer.Option(help="ImageFolder dir (train/, val/), IDX dir, or 'fashion-mnist'.")],
    rule: o.RuleOpt = "maxpool",
    checkpoint: o.CheckpointOpt = None,
    num_classes: o.NumClassesOpt = None,
    in_chans: o.InChansOpt = None,
    kwarg: o.KwargOpt = None,
    img_size: Annotated[Optional[int], typer.Option(help="Input height/width instead of the model's.")] = None,
    by: Annotated[str, typer.Option(help="Group layers by 'stage' or 'layer'.")] = "stage",
    limit_val: Annotated[Optional[int], typer.Option(help="Evaluate on a fixed subset of N images.")] = 2000,
    bn_recalib_batches: Annotated[int, typer.Option(help="Re-estimate BatchNorm on N training batches per variant "
                                                         "(0: off).")] = 8,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 64,
    max_drop: Annotated[Optional[float], typer.Option(help="Accuracy drop (points) a group may cost.")] = None,
    write_rule: Annotated[Optional[Path], typer.Option(help="Write a rule file converting only the groups within "
                                                            "--max-drop.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --write-rule file.")] = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Convert one stage (or layer) at a time, measure each one's accuracy drop and latency change, rank them."""
    if write_rule is not None and max_drop is None:
        raise RuleError("--write-rule needs --max-drop (the accuracy points a converted group may cost)")
    if write_rule is not None and write_rule.exists() and not overwrite:
        raise RuleError(f"{write_rule} already exists; choose another path or pass --overwrite")
    rules = load_rules(rule)
    original = create_model(model, checkpoint=checkpoint, **o.model_kwargs(num_classes, in_chans, kwarg)).eval()
    data_cfg = model_data_config(original, img_size)
    size = tuple(data_cfg["input_size"])
    source = resolve_source(data)
    val = open_split(source, "val", limit_val)
    logits = original(torch.zeros(1, *size)).shape[-1]
    if len(val.classes) != logits:
        raise DataError(f"the model has {logits} classes but {data} has {len(val.classes)}; pass --num-classes "
                        f"{len(val.classes)} (and the --checkpoint trained on this data)")
    _, eval_tf = build_transforms(data_cfg, "none")
    val.mode = "RGB" if size[0] == 3 else "L"
    val.transform = eval_tf
    precision = resolve_precision(torch.device("cpu"))
    loader = eval_loader(val, batch_size)
    calib = open_split(source, "train", bn_recalib_batches * batch_size or None, seed=1)
    calib.mode, calib.transform = val.mode, eval_tf

    def top1(m: nn.Module) -> float:
        return evaluate(m, loader, precision).top1

    def latency(base: nn.Module, variant: nn.Module) -> tuple[float, float]:
        cfg = LatencyConfig(batch_sizes=(1,), input_size=size, runs=15, warmup=3, max_seconds=5,  # type: ignore[arg-type]
                            deploy_method="auto")
        times = measure({"original": base, "variant": variant}, ["cpu"], cfg)[("cpu", 1)]
        return median_ms(times["original"]), median_ms(times["variant"])

    def recalibrate(m: nn.Module) -> None:
        if bn_recalib_batches > 0:
            recalibrate_batchnorm(m, eval_loader(calib, batch_size), precision, bn_recalib_batches)

    with err_console.status("measuring...") as status:
        result = run_sensitivity(original, rules, size, top1, latency, by=by, prepare=recalibrate,  # type: ignore[arg-type]
                                 on_group=lambda g, i, n: status.update(f"group {i + 1}/{n}: {g}"))
    if write_rule is not None and max_drop is not None:
        write_rule.write_text(selected_rules(rules, result, max_drop).text)
        err_console.print(f"wrote {write_rule}: use it with `pfconvert convert {model} --rule {write_rule}`")
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    out_console.print(_table(result, max_drop))
