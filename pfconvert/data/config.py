"""The data config: how images become a model's input (size, resize interpolation, crop, normalisation), resolved once
when a model is converted, stored in its artifact, and used by every command after.

It starts from timm's data config of the model (``timm.data.resolve_model_data_config``: the pretrained config's
input size, interpolation, crop, mean and std) and takes the user's overrides. One rule is pfconvert's own: when the
images of a dataset are smaller than the model's input (28 px Fashion-MNIST into a 64 px model) and the user did not
choose a crop, the whole image is resized to the input size (no crop, :meth:`DataConfig.for_images`): a centre crop
of an upsampled small image throws away its border for nothing, and users train such models on whole images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["DataConfig", "INTERPOLATIONS", "CROP_MODES", "resolve_data_config"]

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")


@dataclass(frozen=True)
class DataConfig:
    """How an image becomes the model's input.

    Attributes:
        input_size: (channels, height, width) of the model's input.
        interpolation: resize interpolation (``bilinear``, ``bicubic``, ...).
        crop_pct: the share of the resized image kept by the crop (1.0: the whole image).
        crop_mode: ``center`` (resize the short side to size / crop_pct, then crop the centre), ``squash`` (resize
            both sides, the aspect ratio is not kept) or ``border``.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        crop_chosen: the crop was given by the user, not taken from the model's pretrained config.
    """

    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_chosen: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        from ..errors import DataError

        channels = self.input_size[0]
        problems = [
            (min(self.input_size) < 1, f"input size {self.input_size} is not positive"),
            (self.interpolation not in INTERPOLATIONS, f"interpolation {self.interpolation!r} is not one of "
                                                       f"{', '.join(INTERPOLATIONS)}"),
            (not (0 < self.crop_pct <= 1), f"crop_pct {self.crop_pct} is not in (0, 1]"),
            (self.crop_mode not in CROP_MODES, f"crop_mode {self.crop_mode!r} is not one of {', '.join(CROP_MODES)}"),
            (len(self.mean) != channels or len(self.std) != channels,
             f"mean {self.mean} and std {self.std} need {channels} values (one per input channel)"),
            (not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0,
             f"mean {self.mean} and std {self.std} must be finite, std positive"),
        ]
        for bad, message in problems:
            if bad:
                raise DataError(f"data config: {message}")

    @property
    def image_mode(self) -> str:
        """The PIL mode images are converted to: ``RGB`` for 3-channel input, ``L`` (grey) otherwise."""
        return "RGB" if self.input_size[0] == 3 else "L"

    def describe(self) -> str:
        """``3x64x64, bilinear, whole image, mean 0.485,0.456,0.406 std 0.229,0.224,0.225``."""
        size = "x".join(map(str, self.input_size))
        if self.crop_pct == 1.0 and self.crop_mode in ("squash", "center"):
            crop = "whole image" if self.crop_mode == "squash" else "short side resized, centre crop"
        else:
            crop = f"{self.crop_mode} crop {self.crop_pct:.3g}"
        values = ("mean " + ",".join(f"{v:.3g}" for v in self.mean) + " std " + ",".join(f"{v:.3g}" for v in self.std))
        return f"{size}, {self.interpolation}, {crop}, {values}"

    def with_size(self, height: int, width: int | None = None) -> DataConfig:
        """The same config at another input height and width."""
        return replace(self, input_size=(self.input_size[0], height, width if width is not None else height))

    def for_images(self, image_size: tuple[int, int] | None) -> tuple[DataConfig, str | None]:
        """The config for images of ``image_size`` (width, height): resize the whole image when the images are
        smaller than the input and no crop was chosen; returns the config and a note saying so (or None)."""
        _, height, width = self.input_size
        if image_size is None or self.crop_chosen or (image_size[0] >= width and image_size[1] >= height):
            return self, None
        if self.crop_mode == "squash" and self.crop_pct == 1.0:
            return self, None
        note = (f"the images ({image_size[0]}x{image_size[1]}) are smaller than the model's input ({width}x{height}): "
                "each is resized whole to the input size, not cropped (pass --crop-pct and --crop-mode to crop)")
        return replace(self, crop_pct=1.0, crop_mode="squash"), note

    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``timm.data.create_transform``."""
        return {"input_size": self.input_size, "interpolation": self.interpolation, "mean": self.mean,
                "std": self.std, "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in recipes, checkpoints and summaries)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict` (raises DataError for a malformed one)."""
        from ..errors import DataError

        try:
            return cls(tuple(int(v) for v in data["input_size"]), str(data["interpolation"]),  # type: ignore[arg-type]
                       float(data["crop_pct"]), str(data["crop_mode"]), tuple(float(v) for v in data["mean"]),
                       tuple(float(v) for v in data["std"]), bool(data.get("crop_chosen", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed data config {data!r}: {exc}") from None


def resolve_data_config(model: Any, *, input_size: tuple[int, int, int] | None = None,
                        interpolation: str | None = None, crop_pct: float | None = None, crop_mode: str | None = None,
                        mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> DataConfig:
    """timm's data config of ``model`` with the given overrides (None: the model's).

    The channel count is the model's (``in_chans``), and a mean or std with another number of values (a model built
    with ``in_chans=1`` keeps its pretrained config's three ImageNet values) is averaged to one value per channel.
    """
    from timm.data import resolve_model_data_config

    cfg = dict(resolve_model_data_config(model))
    channels = getattr(model, "in_chans", None)
    default_c = int(channels) if isinstance(channels, int) else cfg["input_size"][0]
    c, h, w = input_size or (default_c, *cfg["input_size"][1:])
    values = {}
    for key, given in (("mean", mean), ("std", std)):
        chosen = tuple(float(v) for v in (given if given is not None else cfg[key]))
        if given is not None and len(chosen) not in (1, c):
            from ..errors import DataError

            raise DataError(f"--{key} has {len(chosen)} values; the model takes {c} channel(s): give {c} (or 1)")
        values[key] = chosen if len(chosen) == c else (sum(chosen) / len(chosen),) * c
    return DataConfig((int(c), int(h), int(w)), interpolation or cfg.get("interpolation") or "bilinear",
                      float(crop_pct if crop_pct is not None else cfg.get("crop_pct") or 1.0),
                      crop_mode or cfg.get("crop_mode") or "center", values["mean"], values["std"],
                      crop_chosen=crop_pct is not None or crop_mode is not None)
