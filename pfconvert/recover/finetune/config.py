"""The settings of a fine-tuning run, validated once, saved in every checkpoint, and compared on ``--resume``.

:class:`FinetuneConfig` is a frozen pydantic model with ``extra="forbid"``: a misspelt key or a negative learning
rate fails when the config is built, naming the field. A checkpoint stores the config as JSON; a resumed run reuses it
and only lets the fields in :data:`RESUME_FREE_FIELDS` change, because every other field changes the training
trajectory and would break the promise that a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from ...errors import TrainingError
from .settings import SETTINGS

__all__ = ["FinetuneConfig", "ConfigBase", "RESUME_FREE_FIELDS", "make_config", "merge_for_resume"]

# Fields that may differ on --resume: they change where data is read from, what is logged, or how fast the run goes,
# not which weights it produces.
RESUME_FREE_FIELDS = frozenset(
    {"data", "workers", "max_steps", "log_every", "eval_teacher", "eval_every", "val_every", "limit_val", "compile",
     "compile_backend", "bn_recalib_images", "device", "lr_probe_images"}
)
# lr_probe_images is free because a resumed run takes the learning rate its start chose from the checkpoint (the probe
# runs once, before the first step); bn_recalib_images likewise acts before the first step only.


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]
    """Construction (``FinetuneConfig(lr=...)``) reports a bad setting as a one-line
    :class:`~pfconvert.errors.TrainingError` (which field, what is wrong), not pydantic's multi-line report;
    ``model_validate*`` keep raising pydantic's ``ValidationError`` for callers that read it."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise _setting_error(exc) from None


class ConfigBase(BaseModel, metaclass=_OneLineErrors):
    """The behaviour of :class:`FinetuneConfig`, whose fields come from the settings table
    (:data:`pfconvert.recover.finetune.settings.SETTINGS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, values: Any) -> Any:
        """Configs saved before the BatchNorm re-estimation was sized in images counted batches. (Configs saved before
        ``warmup_share`` name ``warmup_epochs``, which then keeps their schedule.)"""
        if isinstance(values, dict) and "bn_recalib_batches" in values:
            values = dict(values)
            batches = values.pop("bn_recalib_batches")
            values.setdefault("bn_recalib_images", batches * values.get("batch_size", 64) if batches else 0)
        return values

    @model_validator(mode="after")
    def _block_steps_need_images(self) -> ConfigBase:
        if getattr(self, "block_steps", 0) and not getattr(self, "reconstruct_images", 0):
            raise ValueError("block_steps trains on the reconstruction images: give reconstruct_images N too "
                             "(--reconstruct-images)")
        return self

    def trajectory_diff(self, other: ConfigBase) -> dict[str, tuple[Any, Any]]:
        """Return ``{field: (self value, other value)}`` for fields that change the weights a run produces."""
        mine, theirs = self.model_dump(), other.model_dump()
        return {key: (mine[key], theirs[key]) for key in mine if key not in RESUME_FREE_FIELDS
                and mine[key] != theirs[key]}


FinetuneConfig = create_model(  # type: ignore[call-overload]
    "FinetuneConfig", __base__=ConfigBase, __module__=__name__,
    __doc__="Settings of :func:`pfconvert.recover.finetune.api.finetune`; the CLI flags map one to one onto these "
            "fields, which are the rows of :data:`pfconvert.recover.finetune.settings.SETTINGS` (type, default, "
            "bounds, description).",
    **{s.name: (s.type, Field(s.default, description=s.description, **s.bounds)) for s in SETTINGS})


def make_config(**values: Any) -> FinetuneConfig:
    """Build a config from keyword values (None means "use the default"), turning validation errors into one line.

    Raises:
        TrainingError: a value is out of range or a name is unknown.
    """
    return FinetuneConfig(**{key: value for key, value in values.items() if value is not None})


def _setting_error(exc: ValidationError) -> TrainingError:
    """The first problem of a validation error, in one line."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return TrainingError(f"invalid fine-tuning setting {field}: {first['msg']}")


def merge_for_resume(saved: FinetuneConfig, overrides: dict[str, Any]) -> FinetuneConfig:
    """Return the saved config with ``overrides`` (None values ignored) applied, refusing trajectory changes.

    ``max_steps`` applies to one invocation: a resumed run goes to the end unless it is given again.

    Raises:
        TrainingError: an override changes a field outside :data:`RESUME_FREE_FIELDS`.
    """
    values = {**saved.model_dump(), "max_steps": None}
    merged = make_config(**{**values, **{k: v for k, v in overrides.items() if v is not None}})
    changed = saved.trajectory_diff(merged)
    if changed:
        key, (old, new) = next(iter(changed.items()))
        raise TrainingError(
            f"--resume continues the saved run exactly, but {key} would change from {old!r} to {new!r}; "
            "drop that option, or start again with --overwrite"
        )
    return merged
