"""``pfconvert convert`` and ``pfconvert inspect``: convert a model and save it, or list what a rule would do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..artifact import ensure_writable, save
from ..convert import build_op, convert, plan
from ..ops import describe_op
from ..report.counting import count_macs
from ..rules import load_rules
from ..zoo import create_model, input_size as model_input_size
from . import _options as o
from ._console import err_console, out_console
from ._render import conversion_table, plan_table
from .app import app

__all__ = ["convert_cmd", "inspect_cmd"]


@app.command("convert")
def convert_cmd(
    model: o.ModelArg,
    rule: o.RuleOpt = "maxpool",
    checkpoint: o.CheckpointOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact directory (default: ./MODEL-RULE).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the contents of an existing --out directory.")] = False,
    num_classes: o.NumClassesOpt = None,
    in_chans: o.InChansOpt = None,
    kwarg: o.KwargOpt = None,
    input_size: o.InputSizeOpt = None,
    allow_empty: o.AllowEmptyOpt = False,
    report: Annotated[bool, typer.Option("--report", help="Also measure latency (batch 1 and 32) on every available "
                                         "backend and print the efficiency report (takes a minute).")] = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Convert MODEL with a rule, print a before/after table and write the artifact (recipe + safetensors)."""
    kwargs = o.model_kwargs(num_classes, in_chans, kwarg)
    rules = load_rules(rule)
    target = out or Path(f"{model}-{Path(rule).stem if rule.endswith(('.yaml', '.yml')) else rule}")
    ensure_writable(target, overwrite)  # fail before the conversion, not after it
    original = create_model(model, checkpoint=checkpoint, **kwargs)
    size = o.parse_input_size(input_size) or model_input_size(original)
    with err_console.status(f"converting {model} with rule '{rules.name}'..."):
        before = count_macs(original, size)
        converted, record = convert(original, rules, input_size=size, allow_empty=allow_empty)
        record.model_name, record.model_kwargs = model, kwargs
        record.checkpoint = str(checkpoint.resolve()) if checkpoint else None
        after = count_macs(converted, size)
        save(converted, record, target, overwrite=overwrite)
    if as_json:
        out_console.print_json(json.dumps({
            "model": model, "rule": rules.name, "out": str(target), "params": [record.params_before, record.params_after],
            "macs": [before.macs, after.macs], "pool_ops": [before.pool_ops, after.pool_ops],
            "convention": before.convention, "replaced": [r.to_dict() for r in record.replacements]}))
        return
    out_console.print(conversion_table(record, before, after))
    err_console.print(f"wrote {target}/ (load with pfconvert.load('{target}'))")
    if report:
        from ..report import render_report, run_report

        with err_console.status("measuring latency...") as status:
            result = run_report(original.eval(), converted.eval(), names=(model, f"{model}+{rules.name}"),
                                input_size=size, progress=status.update)
        out_console.print(render_report(result))


@app.command("inspect")
def inspect_cmd(
    model: o.ModelArg,
    rule: o.RuleOpt = "maxpool",
    num_classes: o.NumClassesOpt = None,
    in_chans: o.InChansOpt = None,
    kwarg: o.KwargOpt = None,
    input_size: o.InputSizeOpt = None,
    allow_empty: o.AllowEmptyOpt = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Dry run: list each layer the rule matches and what it would become. Nothing is written."""
    rules = load_rules(rule)
    original = create_model(model, **o.model_kwargs(num_classes, in_chans, kwarg))
    size = o.parse_input_size(input_size) or model_input_size(original)
    matches, _ = plan(original, rules, size)
    if not matches and not allow_empty:
        from ..errors import RuleError

        raise RuleError(f"rule '{rules.name}' matched no layer of {model}; pass --allow-empty to accept that")
    ops = [describe_op(build_op(m, original)) for m in matches]
    if as_json:
        out_console.print_json(json.dumps([{"layer": m.site.path, "is": m.site.describe(), "rule": m.rule.name,
                                            "becomes": op, "absorbs": m.absorbed} for m, op in zip(matches, ops)]))
        return
    out_console.print(plan_table(matches, ops))
    err_console.print(f"{len(matches)} layers matched by rule '{rules.name}' in {model}")
