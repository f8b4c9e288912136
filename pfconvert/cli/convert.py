"""``pfconvert convert`` and ``pfconvert inspect``: convert a model and save it, or list what a rule would do."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from . import _options as o
from ._console import err_console, out_console, say
from ._render import header
from .app import app, on_interrupt

__all__ = ["convert_cmd", "inspect_cmd"]


def _default_out(model: str, rule: str) -> Path:
    return Path(f"{model}-{Path(rule).stem if rule.endswith(('.yaml', '.yml')) else rule}")


_SIZE_FIX = "give an --input-size the model takes (a ViT: add --kwarg img_size=H, or --kwarg dynamic_img_size=true)"


def _check_size(model: str, size: o.InputSize, kwargs: dict) -> None:
    """Refuse an --input-size the model does not take, or one whose activations would not fit in memory, on a
    shapes-only (meta) copy of the model: nothing is allocated, no weights are read."""
    import torch

    from .._inputs import check_input
    from ..conversion.models import create_model, input_size as model_input_size

    try:
        with torch.device("meta"):
            shapes = create_model(model, **kwargs)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta tensors: the conversion says what is wrong
        return
    check_input(shapes, size.shape(model_input_size(shapes)[0]), what=model, fix=_SIZE_FIX)


def _library_size(size: o.InputSize | None) -> tuple[int, int, int] | int | None:
    """What :func:`pfconvert.convert` takes: (C, H, W), or the side N when the model's channels are meant."""
    if size is None:
        return None
    return size.height if size.channels is None else (size.channels, size.height, size.width)


def _interrupt_note(target: Path, started: float) -> Callable[[], str]:
    """What a conversion stopped by Ctrl-C leaves in ``target``."""

    def note() -> str:
        recipe = target / "recipe.json"
        if recipe.is_file() and recipe.stat().st_mtime >= started:
            return f"convert stopped by Ctrl-C after writing {target} (complete)"
        if target.exists() and any(p.stat().st_mtime >= started for p in target.iterdir() if not p.is_symlink()):
            return f"convert stopped by Ctrl-C while writing {target}; it may be incomplete: convert again with --overwrite"
        return "convert stopped by Ctrl-C; nothing was written"

    return note


@app.command("convert")
def convert_cmd(
    model: o.ModelArg,
    rule: o.RuleOpt = "maxpool",
    checkpoint: o.CheckpointOpt = None,
    pretrained: o.PretrainedOpt = False,
    pretrained_file: o.PretrainedFileOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact directory (default: ./MODEL-RULE).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact in --out (only the files pfconvert "
                                            "wrote; a folder that is not an artifact is refused).")] = False,
    new_head: Annotated[bool, typer.Option("--new-head", help="With --checkpoint or --pretrained-file: re-initialise "
                                           "the classifier (at --num-classes) instead of loading it; the rest is "
                                           "still loaded strictly.")] = False,
    num_classes: o.NumClassesOpt = None,
    in_chans: o.InChansOpt = None,
    kwarg: o.KwargOpt = None,
    input_size: o.InputSizeOpt = None,
    interpolation: o.InterpolationOpt = None,
    crop_pct: o.CropPctOpt = None,
    crop_mode: o.CropModeOpt = None,
    mean: o.MeanOpt = None,
    std: o.StdOpt = None,
    allow_empty: o.AllowEmptyOpt = False,
    prune: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, callback=o.finite, help="Also prune this share of the channels "
                                                   "after the rule (Torch-Pruning, pfconvert[prune]; rounded to "
                                                   "multiples of 8); a rule file's prune: section does the same.")
                     ] = None,
    report: Annotated[bool, typer.Option("--report", help="Also measure latency (batch 1 and 32) on every available "
                                         "backend and print the efficiency report (takes a minute).")] = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Convert MODEL with a rule, print a before/after table and write the artifact (recipe + safetensors).

    The data config (input size, resize, crop, mean, std) is resolved here, from timm's config of the model and the
    options, and stored in the artifact: fine-tuning, eval, sensitivity and report use it.
    """
    kwargs = o.model_kwargs(num_classes, in_chans, kwarg)
    size = o.parse_input_size(input_size)
    data = o.data_overrides(interpolation, crop_pct, crop_mode, mean, std)
    target = out or _default_out(model.removeprefix("hf-hub:").replace("/", "-"), rule)
    from .._files import ensure_writable
    from ..rules.loading import load_rules

    rules = load_rules(rule)  # an unknown rule fails before torch is imported
    if prune is not None:
        from ..conversion.pruning import with_prune
        from ..errors import RuleError

        if not 0.0 < prune < 1.0:
            raise RuleError(f"--prune must be between 0 and 1 (exclusive), got {prune}")
        rules = with_prune(rules, prune)
    ensure_writable(target, overwrite, marker="recipe.json")  # fail before the conversion, not after it
    on_interrupt(_interrupt_note(target, time.time()))
    if size is not None:
        _check_size(model, size, kwargs)
    from ..conversion.artifact import save
    from ..conversion.rewrite import convert_pair
    from ..report.counting import count_macs

    with err_console.status(escape(f"converting {model} with rule '{rules.name}'...")):
        original, converted, record = convert_pair(model, rules, checkpoint=checkpoint, input_size=_library_size(size),
                                                   allow_empty=allow_empty, pretrained=pretrained,
                                                   pretrained_file=pretrained_file, new_head=new_head, data=data,
                                                   **kwargs)
        header(record)
        before, after = count_macs(original, record.input_size), count_macs(converted, record.input_size)
        save(converted, record, target, overwrite=overwrite)
    if not as_json:
        from ._render import conversion_table

        out_console.print(conversion_table(record, before, after))
        say(f"wrote {target}/ (load with pfconvert.load('{target}'))")
    result = None
    if report:
        from ..report.run import run_report

        with err_console.status("measuring latency...") as status:
            result = run_report(original.eval(), converted.eval(), names=(model, f"{model}+{rules.name}"),
                                input_size=record.input_size, progress=lambda text: status.update(escape(text)))
    if as_json:
        payload = {"model": record.model_name, "requested": model, "rule": rules.name, "out": str(target),
                   "input_size": list(record.input_size),
                   "source": record.source.to_dict() if record.source else None,
                   "data_config": record.data_config.to_dict() if record.data_config else None,
                   "params": [record.params_before, record.params_after], "macs": [before.macs, after.macs],
                   "pool_ops": [before.pool_ops, after.pool_ops], "convention": before.convention,
                   "replaced": [r.to_dict() for r in record.replacements], "pruning": record.pruning}
        out_console.print_json(o.json_text({**payload, **({"report": result.to_dict()} if result else {})}))
    elif result is not None:
        from ._report_render import render_report

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
    kwargs = o.model_kwargs(num_classes, in_chans, kwarg)
    size = o.parse_input_size(input_size)
    from ..conversion.original import load_original
    from ..conversion.rewrite import preview
    from ..errors import RuleError
    from ..rules.loading import load_rules

    rules = load_rules(rule)
    original = load_original(model, input_size=_library_size(size), **kwargs)
    built, shape = original.model, original.data_config.input_size if size is not None else None
    header(source=original.source, data_cfg=original.data_config)
    if shape is not None:
        from .._inputs import check_input

        check_input(built, shape, what=model, fix=_SIZE_FIX)
    replacements = preview(built, rules, shape)
    if not replacements and not allow_empty:
        raise RuleError(f"rule '{rules.name}' matched no layer of {model}; pass --allow-empty to accept that")
    if as_json:
        out_console.print_json(o.json_text([{"layer": r.path, "is": r.old, "rule": r.rule, "becomes": r.new,
                                             "absorbs": r.absorbed, "note": r.note} for r in replacements]))
        return
    from ._render import preview_table

    out_console.print(preview_table(replacements))
    say(f"{len(replacements)} layers matched by rule '{rules.name}' in {model}")
