"""Shared command-line options (``Annotated`` aliases) and their parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import PfconvertError

__all__ = ["ModelArg", "ArtifactArg", "RuleOpt", "CheckpointOpt", "PretrainedOpt", "PretrainedFileOpt",
           "NumClassesOpt", "InChansOpt", "InputSizeOpt", "InterpolationOpt", "CropPctOpt", "CropModeOpt", "MeanOpt",
           "StdOpt", "KwargOpt", "AllowEmptyOpt", "JsonOpt", "model_kwargs", "data_overrides", "parse_input_size",
           "parse_int_list", "parse_floats", "finite", "json_text", "img_size_fix", "MAX_BATCH", "MAX_SIDE"]

MAX_BATCH = 65536
"""Largest batch size accepted (memory is checked as well, against the model's activations)."""
MAX_SIDE = 16384
"""Largest input height or width accepted (memory is checked as well)."""


def finite(param: typer.CallbackParam, value: Any) -> Any:
    """Callback of every float option: refuse NaN and infinities (click's ranges let NaN through every bound, and a
    NaN would reach the results and their JSON)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number; give a number such as 1.0", param=param)
    return value


def img_size_fix(img_size: int | None) -> str:
    """How to give a timm model built for a fixed input size (a ViT) the size ``--img-size`` asks for."""
    if img_size is None:
        return ""
    return (f"pass --kwarg img_size={img_size} (timm builds the model for that size) or --kwarg dynamic_img_size=true "
            "(where the model supports it), or drop --img-size")


def json_text(data: Any, **kwargs: Any) -> str:
    """``data`` as strict JSON text: NaN and infinities become null (JSON has no such numbers; readers reject
    them)."""
    from .._json import strict_dumps

    return strict_dumps(data, **kwargs)

ModelArg = Annotated[str, typer.Argument(help="A timm model: a name (mobilenetv2_100), a family with one default "
                                         "variant (mobilenetv2), a tagged name (resnet50.a1_in1k) or hf-hub:ORG/NAME. "
                                         "Random init unless --checkpoint, --pretrained or --pretrained-file.")]
ArtifactArg = Annotated[Path, typer.Argument(help="Artifact directory written by `pfconvert convert`.")]
RuleOpt = Annotated[str, typer.Option("--rule", "-r", help="Built-in rule name (see `pfconvert rules`) or a YAML path.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="Local weights for the model: .pth/.pt (read with weights_only=True) or .safetensors.")]
PretrainedOpt = Annotated[bool, typer.Option(
    "--pretrained", help="Load timm's pretrained weights through its loader: the Hugging Face Hub or its local cache "
    "(HF_HUB_OFFLINE=1 never downloads).")]
PretrainedFileOpt = Annotated[Optional[Path], typer.Option(
    "--pretrained-file", help="timm's pretrained weights from this local file (timm's pretrained-config file "
    "overlay: the classifier is adapted as with --pretrained).", show_default=False)]
InterpolationOpt = Annotated[Optional[str], typer.Option(
    help="Resize interpolation: bilinear, bicubic, nearest... (default: the model's pretrained config).",
    show_default=False)]
CropPctOpt = Annotated[Optional[float], typer.Option(
    min=0.01, max=1.0, callback=finite, help="Share of the resized image kept by the crop; 1 keeps it whole (default: the model's).",
    show_default=False)]
CropModeOpt = Annotated[Optional[str], typer.Option(
    help="center (resize the short side, crop the centre), squash (resize both sides: the whole image) or border.",
    show_default=False)]
MeanOpt = Annotated[Optional[str], typer.Option(
    help="Per-channel mean, comma-separated (e.g. 0.5,0.5,0.5; default: the model's).", show_default=False)]
StdOpt = Annotated[Optional[str], typer.Option(
    help="Per-channel standard deviation, comma-separated (default: the model's).", show_default=False)]
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


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5), with a one-line error naming the option."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip()) or None
    except ValueError:
        raise PfconvertError(f"{option} {text!r}: expected comma-separated numbers such as 0.5,0.5,0.5") from None


def data_overrides(interpolation: str | None, crop_pct: float | None, crop_mode: str | None, mean: str | None,
                   std: str | None) -> dict[str, Any]:
    """The data-config options given, as :func:`pfconvert.data.resolve_data_config` keywords (checked there)."""
    from ..data.config import CROP_MODES, INTERPOLATIONS

    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise PfconvertError(f"--interpolation {interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
    if crop_mode is not None and crop_mode not in CROP_MODES:
        raise PfconvertError(f"--crop-mode {crop_mode!r}: choose one of {', '.join(CROP_MODES)}")
    given = {"interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": crop_mode,
             "mean": parse_floats(mean, "--mean"), "std": parse_floats(std, "--std")}
    return {key: value for key, value in given.items() if value is not None}


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
    if max(h, w) > MAX_SIDE or c > 4096:
        raise PfconvertError(f"--input-size {text!r}: at most {MAX_SIDE} pixels a side and 4096 channels; give a size "
                             "such as 3,224,224")
    from .._inputs import check_memory

    check_memory(None, (c, h, w), {"--input-size": [1]})  # the probe image alone must fit
    return c, h, w


def parse_int_list(text: str, option: str) -> list[int]:
    """``"1,32"`` -> [1, 32], with a one-line error naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PfconvertError(f"{option} {text!r}: expected comma-separated integers such as 1,32") from None
    if not values or min(values) < 1:
        raise PfconvertError(f"{option} {text!r}: expected positive integers such as 1,32")
    if max(values) > MAX_BATCH:
        raise PfconvertError(f"{option} {text!r}: at most {MAX_BATCH} (memory is checked against the model as "
                             "well); give sizes such as 1,32")
    return values
