"""The settings of a fine-tuning run, validated once, saved in every checkpoint, and compared on ``--resume``.

:class:`FinetuneConfig` is a frozen pydantic model with ``extra="forbid"``: a misspelt key or a negative learning
rate fails when the config is built, naming the field. A checkpoint stores the config as JSON; a resumed run reuses it
and only lets the fields in :data:`RESUME_FREE_FIELDS` change, because every other field changes the training
trajectory and would break the promise that a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ...errors import TrainingError

__all__ = ["FinetuneConfig", "RESUME_FREE_FIELDS", "make_config", "merge_for_resume"]

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


class FinetuneConfig(BaseModel, metaclass=_OneLineErrors):
    """Settings of :func:`pfconvert.recover.finetune.api.finetune`; the CLI flags map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    data: str = Field(description="ImageFolder dir (train/, val/), IDX dir, or 'fashion-mnist'")
    epochs: int = Field(3, ge=1, description="training epochs (see train_images for a budget in images)")
    train_images: int | None = Field(None, ge=1, description="train on this many images in all, whatever the split's "
                                     "size (epochs is then the number of passes it takes, the last one partial)")
    batch_size: int = Field(64, ge=1, description="images per step and per process")
    opt: str = Field("adamw", description="timm optimizer name (create_optimizer_v2)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: chosen for the case by a short "
                             "probe after reconstruction: each of 1e-3, 3e-4, 1e-4, 3e-5 trains from the same start, "
                             "the lowest distillation loss on the val split wins; see lr_probe_images)")
    lr_probe_images: int = Field(2048, ge=0, description="training images of each candidate of the learning-rate "
                                 "probe (at most the run's own; stated separately from the run's budget; 0: no "
                                 "probe, 1e-3 when no lr is given)")
    weight_decay: float = Field(0.01, ge=0, description="weight decay (not applied to biases and norms)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum for SGD-like optimizers")
    sched: str = Field("cosine", description="timm scheduler name (create_scheduler_v2), stepped per update")
    warmup_share: float = Field(0.05, ge=0, lt=1, description="linear warm-up over this share of the run's updates")
    warmup_epochs: float | None = Field(None, ge=0, description="deprecated: warm-up length in epochs, instead of "
                                        "warmup_share")
    warmup_lr: float = Field(1e-6, ge=0, description="learning rate at the start of warm-up")
    min_lr: float = Field(1e-6, ge=0, description="learning rate at the end of the schedule")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T (KL of softmax(z/T), times T^2)")
    kd_weight: float = Field(1.0, ge=0, description="weight of the distillation (KL) loss; 0 trains on labels only")
    task_weight: float = Field(1.0, ge=0, description="weight of the label cross-entropy; 0 distils only")
    feature_weight: float = Field(0.0, ge=0, description="weight of feature distillation: the student's output of "
                                  "every block holding a replaced layer matched to the teacher's (squared error "
                                  "over the teacher's mean square, averaged over blocks); 0: off")
    smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy")
    augment: Literal["none", "light", "timm"] = Field(
        "light", description="training augmentation: none, light (random crop of 60-100% of the area, flip) or timm")
    img_size: int | None = Field(None, ge=8, description="input height and width in pixels, instead of the model's")
    val_split: float = Field(0.1, ge=0, lt=1, description="share of the training images carved out (seeded) as the "
                             "validation split the best epoch is chosen on (0: the data's val/ folder, with test/)")
    limit_train: int | None = Field(None, ge=1, description="use a fixed random subset of N training images")
    limit_val: int | None = Field(None, ge=1, description="use a fixed random subset of N validation images")
    workers: int = Field(2, ge=0, description="data-loading worker processes per training process")
    seed: int = Field(0, description="seed of shuffling, augmentation and initialisation")
    device: str = Field("auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported, else fp16 with scaling)")
    channels_last: bool = Field(True, description="channels_last memory format (faster on CUDA and on CPU)")
    compile: bool = Field(False, description="torch.compile the student and the teacher")
    compile_backend: str = Field("inductor", description="torch.compile backend")
    ema: bool = Field(False, description="keep an EMA of the student; it is the model validated and exported")
    ema_decay: float = Field(0.9998, gt=0, lt=1, description="EMA decay per step")
    bn_recalib_images: int = Field(512, ge=0, description="re-estimate the student's BatchNorm statistics on N "
                                   "training images before training (0: off)")
    freeze_bn: bool = Field(False, description="keep the student's BatchNorm statistics fixed while training (eval-"
                            "mode BN; affine weights still train)")
    reconstruct_images: int = Field(0, ge=0, description="before training, refit the layer after each replaced op "
                                    "by least squares on N un-augmented training images (0: off)")
    max_steps: int | None = Field(None, ge=1, description="stop (resumably) after this many steps in total; "
                                  "not kept by --resume")
    log_every: int = Field(20, ge=1, description="write a step record to metrics.jsonl every N steps")
    eval_every: int = Field(1, ge=1, description="validate every N epochs and after the last one (the best epoch is "
                            "chosen among the validated ones), when val_every does not apply")
    val_every: int | None = Field(None, ge=1, description="validate every N training images and at the end; the best "
                                  "point's weights are exported (default: 4 points per run when it is shorter than 3 "
                                  "epochs, else every eval_every epochs)")
    eval_teacher: bool = Field(True, description="validate the teacher once before training")

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

    def trajectory_diff(self, other: FinetuneConfig) -> dict[str, tuple[Any, Any]]:
        """Return ``{field: (self value, other value)}`` for fields that change the weights a run produces."""
        mine, theirs = self.model_dump(), other.model_dump()
        return {key: (mine[key], theirs[key]) for key in mine if key not in RESUME_FREE_FIELDS
                and mine[key] != theirs[key]}


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
