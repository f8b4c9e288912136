"""Shared command-line options (``Annotated`` aliases) and their parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

import typer

from ..errors import PfconvertError

__all__ = ["ModelArg", "ArtifactArg", "RuleOpt", "CheckpointOpt", "PretrainedOpt", "PretrainedFileOpt",
           "NumClassesOpt", "InChansOpt", "InputSizeOpt", "SideSizeOpt", "ImgSizeOpt", "DataOpt", "ValSplitOpt",
           "BnRecalibOpt", "EvalBatchSizeOpt", "LimitOpt", "LimitValOpt", "InterpolationOpt", "CropPctOpt",
           "CropModeOpt", "MeanOpt", "StdOpt", "KwargOpt", "AllowEmptyOpt", "JsonOpt", "InputSize", "model_kwargs",
           "data_overrides", "parse_input_size", "side_size", "artifact_side", "renamed", "parse_int_list",
           "parse_floats", "finite", "json_text", "img_size_fix", "MAX_BATCH", "MAX_SIDE", "MIN_SIDE"]

MAX_BATCH = 65536
"""Largest batch size accepted (memory is checked as well, against the model's activations)."""
MAX_SIDE = 16384
"""Largest input height or width accepted (memory is checked as well)."""
MIN_SIDE = 8
"""Smallest input side the commands that feed a dataset accept (eval, plan, sensitivity, finetune)."""


def finite(param: typer.CallbackParam, value: Any) -> Any:
    """Callback of every float option: refuse NaN and infinities (click's ranges let NaN through every bound, and a
    NaN would reach the results and their JSON)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number; give a number such as 1.0", param=param)
    return value


def img_size_fix(img_size: int | None) -> str:
    """How to give a timm model built for a fixed input size (a ViT) the size ``--input-size`` asks for."""
    if img_size is None:
        return ""
    return (f"pass --kwarg img_size={img_size} (timm builds the model for that size) or --kwarg dynamic_img_size=true "
            "(where the model supports it), or drop --input-size")


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
    "--input-size", help="Input size of the traced forward: C,H,W, or N for N x N at the model's channels (default: "
    "the model's pretrained config).")]
SideSizeOpt = Annotated[Optional[str], typer.Option(
    "--input-size", help="Input height and width N in pixels (or C,N,N with the model's channels C), instead of the "
    "model's.", show_default=False)]
ImgSizeOpt = Annotated[Optional[str], typer.Option(
    "--img-size", hidden=True, help="Deprecated name of --input-size (removed in pfconvert 0.2).")]
DataOpt = Annotated[str, typer.Option(
    "--data", help="ImageFolder dir (train/, val/), IDX dir, or 'fashion-mnist'.")]
ValSplitOpt = Annotated[float, typer.Option(
    "--val-split", min=0.0, max=0.99, callback=finite, help="Share of the training images carved out (seeded) as the "
    "validation split (0: the data's val/ folder, with test/); the test split is never used.")]
BnRecalibOpt = Annotated[int, typer.Option(
    "--bn-recalib-images", min=0, help="Re-estimate BatchNorm on N other training images per converted variant "
    "(0: off).")]
EvalBatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Evaluation batch size.")]
LimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", min=1, help="Evaluate on a fixed random subset of N validation images.")]
LimitValOpt = Annotated[Optional[int], typer.Option(
    "--limit-val", min=1, hidden=True, help="Deprecated name of --limit (removed in pfconvert 0.2).")]
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


class InputSize(NamedTuple):
    """An ``--input-size`` as given: ``N`` (channels None: the model's, N x N) or ``C,H,W``."""

    channels: int | None
    height: int
    width: int
    option: str = "--input-size"

    def __str__(self) -> str:
        return str(self.height) if self.channels is None else f"{self.channels},{self.height},{self.width}"

    def shape(self, channels: int) -> tuple[int, int, int]:
        """(C, H, W): the given channels, else ``channels`` (the model's)."""
        return (self.channels if self.channels is not None else channels, self.height, self.width)

    def side(self, channels: int | None = None) -> int:
        """The side of a square size, for the commands that take one; a given C must be the model's ``channels``.

        Raises:
            PfconvertError: the size is not square, or its channels are not the model's.
        """
        if self.height != self.width:
            raise PfconvertError(f"{self.option} {self}: this command takes a square input (height = width); give N "
                                 f"such as {self.height}, or C,N,N")
        if channels is not None and self.channels is not None and self.channels != channels:
            raise PfconvertError(f"{self.option} {self}: the model takes {channels} input channels, not "
                                 f"{self.channels}; give {self.height} or {channels},{self.height},{self.width}")
        return self.height


def parse_input_size(text: str | None, option: str = "--input-size", minimum: int = 1) -> InputSize | None:
    """``"3,224,224"`` -> InputSize(3, 224, 224); ``"64"`` -> InputSize(None, 64, 64) (the model's channels).

    Raises:
        PfconvertError: not N or C,H,W, a side under ``minimum`` or too large (one line naming ``option``).
    """
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3):
        raise PfconvertError(f"{option} {text!r}: expected N (height = width) such as 224, or C,H,W such as "
                             "3,224,224")
    c, h, w = (None, values[0], values[0]) if len(values) == 1 else values
    if min(h, w) < minimum or (c is not None and c < 1):
        raise PfconvertError(f"{option} {text!r}: sizes must be positive" if minimum <= 1 else
                             f"{option} {text!r}: at least {minimum} pixels a side")
    if max(h, w) > MAX_SIDE or (c or 0) > 4096:
        raise PfconvertError(f"{option} {text!r}: at most {MAX_SIDE} pixels a side and 4096 channels; give a size "
                             "such as 3,224,224")
    from .._inputs import check_memory

    check_memory(None, (c or 3, h, w), {option: [1]})  # the probe image alone must fit
    return InputSize(c, h, w, option)


def side_size(input_size: str | None, img_size: str | None) -> InputSize | None:
    """The square ``--input-size`` of the commands that feed a dataset (or its deprecated name ``--img-size``),
    parsed; :meth:`InputSize.side` checks it against the model."""
    text = renamed("--img-size", img_size, "--input-size", input_size)
    size = parse_input_size(text, "--img-size" if img_size is not None else "--input-size", MIN_SIDE)
    if size is not None:
        size.side()  # square, before any work
    return size


def artifact_side(size: InputSize | None, artifact: Path) -> int | None:
    """The side of a square ``--input-size`` given for an artifact's model; a given C must be the channels the
    artifact was converted at (an artifact that cannot be read is left to the command, which says why)."""
    if size is None:
        return None
    channels = None
    if size.channels is not None:
        from ..conversion.artifact import RECIPE_FILE, Recipe

        try:
            channels = Recipe.from_file(artifact / RECIPE_FILE).input_size[0]
        except PfconvertError:
            pass
    return size.side(channels)


def renamed(old: str, old_value: Any, new: str, new_value: Any, ctx: typer.Context | None = None,
            param: str | None = None) -> Any:
    """The value of option ``new``, or of ``old``, its deprecated name (kept for one release), with a one-line
    warning on stderr naming the new one. An option ``new`` with a default needs the command's ``ctx`` and its
    parameter name ``param`` (default: its flag in snake case) to tell whether it was given; otherwise it was when
    its value is not None.

    Raises:
        PfconvertError: both names were given.
    """
    if old_value is None:
        return new_value
    from .._deprecated import deprecation_message
    from ._console import say

    if ctx is not None:
        source = ctx.get_parameter_source(param or new.lstrip("-").replace("-", "_"))
        given = source is not None and source.name != "DEFAULT"
    else:
        given = new_value is not None
    if given:
        raise PfconvertError(f"{old} and {new} are one option ({old} is its deprecated name); give only {new}")
    say(f"Warning: {deprecation_message(old, new)}")
    return old_value


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


def study_original(model: str, checkpoint: Path | None, pretrained: bool, pretrained_file: Path | None,
                   overrides: dict[str, Any], model_kwargs: dict[str, Any], size: InputSize | None,
                   batches: dict[str, list[int]]) -> tuple[Any, Any, int | None]:
    """The original a study command (plan, sensitivity) works on, built by :func:`pfconvert.load_original`, its
    source said on stderr, and its input checked at ``size`` for the ``batches`` the command runs (``{option: [batch
    sizes]}``) before any work; returns ``(model, data config, side)`` (side: the square side asked for, or None)."""
    from .._inputs import check_input
    from ..conversion.original import load_original
    from ._console import say
    from ._render import source_line

    built = load_original(model, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file, data=overrides,
                          **model_kwargs)
    say(source_line(built.source))
    data_cfg = built.data_config
    side = size.side(data_cfg.input_size[0]) if size is not None else None
    check_input(built.model, data_cfg.with_size(side).input_size if side else data_cfg.input_size, batches,
                what=model, fix=img_size_fix(side))
    return built.model, data_cfg, side
