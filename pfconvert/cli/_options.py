"""Shared command-line options (``Annotated`` aliases) and their parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import PfconvertError

__all__ = ["ModelArg", "ArtifactArg", "RuleOpt", "CheckpointOpt", "NumClassesOpt", "InChansOpt", "InputSizeOpt",
           "KwargOpt", "AllowEmptyOpt", "JsonOpt", "model_kwargs", "parse_input_size", "parse_int_list"]

ModelArg = Annotated[str, typer.Argument(help="A timm model name, e.g. mobilenetv2_100 (built with random init).")]
ArtifactArg = Annotated[Path, typer.Argument(help="Artifact directory written by `pfconvert convert`.")]
RuleOpt = Annotated[str, typer.Option("--rule", "-r", help="Built-in rule name (see `pfconvert rules`) or a YAML path.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="Local weights for the model: .pth/.pt (read with weights_only=True) or .safetensors.")]
NumClassesOpt = Annotated[Optional[int], typer.Option(min=1, help="Classifier size passed to timm.create_model.")]
InChansOpt = Annotated[Optional[int], typer.Option(min=1, help="Input channels passed to timm.create_model.")]
InputSizeOpt = Annotated[Optional[str], typer.Option(
    help="Input size C,H,W of the traced forward (default: the model's pretrained config).")]
KwargOpt = Annotated[Optional[list[str]], typer.Option(
    "--kwarg", help="Extra timm.create_model kwarg KEY=VALUE (VALUE parsed as JSON when it can be); repeatable.")]
AllowEmptyOpt = Annotated[bool, typer.Option(help="Do not fail when the rule matches no layer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]


def model_kwargs(num_classes: int | None, in_chans: int | None, kwargs: list[str] | None) -> dict[str, Any]:
    """timm.create_model kwargs from the options."""
    out: dict[str, Any] = {}
    for item in kwargs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise PfconvertError(f"--kwarg {item!r}: expected KEY=VALUE, e.g. --kwarg drop_rate=0.1")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    if num_classes is not None:
        out["num_classes"] = num_classes
    if in_chans is not None:
        out["in_chans"] = in_chans
    return out


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """``"3,224,224"`` -> (3, 224, 224)."""
    if text is None:
        return None
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise PfconvertError(f"--input-size {text!r}: expected C,H,W such as 3,224,224") from None
    if min(c, h, w) < 1:
        raise PfconvertError(f"--input-size {text!r}: sizes must be positive")
    return c, h, w


def parse_int_list(text: str, option: str) -> list[int]:
    """``"1,32"`` -> [1, 32], with a one-line error naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PfconvertError(f"{option} {text!r}: expected comma-separated integers such as 1,32") from None
    if not values or min(values) < 1:
        raise PfconvertError(f"{option} {text!r}: expected positive integers such as 1,32")
    return values
