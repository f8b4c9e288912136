"""``pfconvert report``: params, MACs, memory and measured latency of an original and a converted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from torch import nn

from ..errors import PfconvertError
from ..report.latency import get_backend, list_backends
from ..report.plot import plot_report
from ..report.render import render_report
from ..report.run import run_report
from . import _options as o
from ._console import err_console, out_console
from .app import app

__all__ = ["report_cmd", "resolve_pair", "parse_int_list"]


def parse_int_list(text: str, option: str) -> list[int]:
    """``"1,32"`` -> [1, 32], with a one-line error naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PfconvertError(f"{option} {text!r}: expected comma-separated integers such as 1,32") from None
    if not values or min(values) < 1:
        raise PfconvertError(f"{option} {text!r}: expected positive integers such as 1,32")
    return values


def _is_artifact(ref: str) -> bool:
    return Path(ref).is_dir()


def _load(ref: str, kwargs: dict) -> tuple[nn.Module, str, tuple[int, int, int] | None]:
    """A model from a timm name or an artifact directory: (model, display name, input size if known)."""
    if _is_artifact(ref):
        from ..artifact import load_artifact

        art = load_artifact(ref)
        return art.model, f"{art.recipe.model}+{art.recipe.rule_name}", tuple(art.recipe.input_size)  # type: ignore
    from ..zoo import create_model

    return create_model(ref, **kwargs), ref, None


def resolve_pair(original: str, converted: str | None, rule: str | None,
                 kwargs: dict) -> tuple[nn.Module, nn.Module, tuple[str, str], tuple[int, int, int] | None]:
    """The two models to compare, their names, and the input size an artifact recorded (if any).

    - ``ARTIFACT``: the artifact's converted model against its original, rebuilt from the recipe.
    - ``MODEL --rule RULE``: the timm model against its conversion by RULE.
    - ``ORIGINAL CONVERTED``: each a timm name or an artifact directory.
    """
    if converted is None:
        if _is_artifact(original):
            from ..artifact import build_original, load_artifact

            art = load_artifact(original)
            name = art.recipe.model or "original"
            return (build_original(art.recipe, art.path), art.model, (name, f"{name}+{art.recipe.rule_name}"),
                    tuple(art.recipe.input_size))  # type: ignore[return-value]
        if rule is None:
            raise PfconvertError(f"'{original}' is a model name: give a CONVERTED model (name or artifact directory) "
                                 "or --rule RULE to convert it on the fly")
        from ..convert import convert

        model, _, size = _load(original, kwargs)
        conv, _record = convert(model, rule)
        return model, conv, (original, f"{original}+{rule}"), size
    if rule is not None:
        raise PfconvertError("--rule converts a single MODEL; drop it when CONVERTED is given")
    a, name_a, size_a = _load(original, kwargs)
    b, name_b, size_b = _load(converted, kwargs)
    return a, b, (name_a, name_b), size_a or size_b


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
        help=f"Backends, comma-separated (default: all available here: {','.join(list_backends())}).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed rounds per backend and batch size.")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forwards per model first.")] = 3,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: torch's setting).")] = None,
    max_seconds: Annotated[float, typer.Option(help="Time budget per backend and batch size.")] = 30.0,
    deploy: Annotated[str, typer.Option(help="How the 'cpu' backend deploys both models: auto, llga, jit, compile, "
                                             "eager (see pfconvert.deploy).")] = "auto",
    input_size: o.InputSizeOpt = None,
    num_classes: o.NumClassesOpt = None,
    kwarg: o.KwargOpt = None,
    accuracy_original: Annotated[Optional[float], typer.Option(help="Known top-1 of the original (for the plot).")]
    = None,
    accuracy_converted: Annotated[Optional[float], typer.Option(help="Known top-1 of the converted model.")] = None,
    memory: Annotated[bool, typer.Option(help="Measure peak memory.")] = True,
    as_json: o.JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown on stdout instead of tables.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a PNG plot to this path.")] = None,
) -> None:
    """Compare ORIGINAL and CONVERTED: params, MACs (convention stated), peak memory, latency per backend."""
    if as_json and markdown:
        raise PfconvertError("--json and --markdown both print on stdout; choose one")
    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    chosen = [b.strip() for b in backends.split(",") if b.strip()] if backends else None
    for name in chosen or []:
        get_backend(name)  # an unknown or unavailable backend fails before models are built
    kwargs = o.model_kwargs(num_classes, None, kwarg)
    with err_console.status("loading models...") as status:
        orig, conv, names, recorded = resolve_pair(original, converted, rule, kwargs)
        from ..zoo import input_size as model_input_size

        size = o.parse_input_size(input_size) or recorded or model_input_size(orig)
        result = run_report(orig, conv, names=names, input_size=size, batch_sizes=sizes, backends=chosen, runs=runs,
                            warmup=warmup, threads=threads, max_seconds=max_seconds, deploy_method=deploy,
                            accuracies=(accuracy_original, accuracy_converted), memory=memory,
                            progress=lambda text: status.update(f"measuring: {text}..."))
    if as_json:
        typer.echo(result.to_json())
    elif markdown:
        typer.echo(result.to_markdown(), nl=False)
    else:
        out_console.print(render_report(result))
    if plot is not None:
        err_console.print(f"wrote {plot_report(result, plot)}")
