"""The settings of a fine-tuning run, as one table: :class:`~pfconvert.recover.finetune.config.FinetuneConfig` is
built from it (its pydantic fields) and ``pfconvert finetune`` builds its flags from it (one per setting, the
description its help).

This module imports neither pydantic nor torch: the command line reads the table without either, which keeps its
start-up fast. A new setting is one row here (and its help panel in :data:`pfconvert.cli.finetune.PANELS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Setting", "SETTINGS", "REQUIRED", "settings"]

REQUIRED: Any = ...
"""The default of a setting that has none (pydantic's marker of a required field)."""


@dataclass(frozen=True)
class Setting:
    """One setting of a fine-tuning run.

    Attributes:
        name: the config field (``batch_size``; the flag is ``--batch-size``).
        type: its Python type (``int | None`` when it may be unset).
        default: its default, or :data:`REQUIRED`.
        description: what it does (the flag's help, the field's description).
        bounds: pydantic's numeric constraints of the field (``ge``, ``gt``, ``lt``).
    """

    name: str
    type: Any
    default: Any
    description: str
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        """The setting has no default."""
        return self.default is REQUIRED


def _s(name: str, type_: Any, default: Any, description: str, **bounds: float) -> Setting:
    return Setting(name, type_, default, description, bounds)


SETTINGS: tuple[Setting, ...] = (
    _s("data", str, REQUIRED, "ImageFolder dir (train/, val/), IDX dir, or 'fashion-mnist'"),
    _s("epochs", int, 3, "training epochs (see train_images for a budget in images)", ge=1),
    _s("train_images", int | None, None, "train on this many images in all, whatever the split's size (epochs is "
       "then the number of passes it takes, the last one partial)", ge=1),
    _s("batch_size", int, 64, "images per step and per process", ge=1),
    _s("opt", str, "adamw", "timm optimizer name (create_optimizer_v2)"),
    _s("lr", float | None, None, "peak learning rate (default: chosen for the case by a short probe after "
       "reconstruction: each of 1e-3, 3e-4, 1e-4, 3e-5 trains from the same start; of those whose distillation loss "
       "on the val split is within 50% of the lowest, the highest rate wins; see lr_probe_images)", gt=0),
    _s("lr_probe_images", int, 2048, "training images of each candidate of the learning-rate probe (at most the "
       "run's own; stated separately from the run's budget; 0: no probe, 1e-3 when no lr is given)", ge=0),
    _s("weight_decay", float, 0.01, "weight decay (not applied to biases and norms)", ge=0),
    _s("momentum", float, 0.9, "momentum for SGD-like optimizers", ge=0, lt=1),
    _s("sched", str, "cosine", "timm scheduler name (create_scheduler_v2), stepped per update"),
    _s("warmup_share", float, 0.05, "linear warm-up over this share of the run's updates", ge=0, lt=1),
    _s("warmup_epochs", float | None, None, "deprecated: warm-up length in epochs, instead of warmup_share", ge=0),
    _s("warmup_lr", float, 1e-6, "learning rate at the start of warm-up", ge=0),
    _s("min_lr", float, 1e-6, "learning rate at the end of the schedule", ge=0),
    _s("grad_clip", float | None, None, "clip the gradient norm to this value", gt=0),
    _s("temperature", float, 4.0, "distillation temperature T (KL of softmax(z/T), times T^2)", gt=0),
    _s("kd_weight", float, 1.0, "weight of the distillation (KL) loss; 0 trains on labels only", ge=0),
    _s("task_weight", float, 1.0, "weight of the label cross-entropy; 0 distils only", ge=0),
    _s("feature_weight", float, 0.0, "weight of feature distillation: the student's output of every block holding a "
       "replaced layer matched to the teacher's (squared error over the teacher's mean square, averaged over blocks); "
       "0: off", ge=0),
    _s("smoothing", float, 0.0, "label smoothing of the cross-entropy", ge=0, lt=1),
    _s("augment", Literal["none", "light", "timm"], "light", "training augmentation: none, light (random crop of "
       "60-100% of the area, flip) or timm"),
    _s("img_size", int | None, None, "input height and width in pixels, instead of the model's", ge=8),
    _s("val_split", float, 0.1, "share of the training images carved out (seeded) as the validation split the best "
       "epoch is chosen on (0: the data's val/ folder, with test/)", ge=0, lt=1),
    _s("limit_train", int | None, None, "use a fixed random subset of N training images", ge=1),
    _s("limit_val", int | None, None, "use a fixed random subset of N validation images", ge=1),
    _s("workers", int, 2, "data-loading worker processes per training process", ge=0),
    _s("seed", int, 0, "seed of shuffling, augmentation and initialisation"),
    _s("device", str, "auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'"),
    _s("amp", bool, True, "mixed precision on CUDA (bf16 where supported, else fp16 with scaling)"),
    _s("channels_last", bool, True, "channels_last memory format (faster on CUDA and on CPU)"),
    _s("compile", bool, False, "torch.compile the student and the teacher"),
    _s("compile_backend", str, "inductor", "torch.compile backend"),
    _s("ema", bool, False, "keep an EMA of the student; it is the model validated and exported"),
    _s("ema_decay", float, 0.9998, "EMA decay per step", gt=0, lt=1),
    _s("bn_recalib_images", int, 512, "re-estimate the student's BatchNorm statistics on N training images before "
       "training (0: off)", ge=0),
    _s("freeze_bn", bool, False, "keep the student's BatchNorm statistics fixed while training (eval-mode BN; affine "
       "weights still train)"),
    _s("reconstruct_images", int, 0, "before training, refit the layer after each replaced op by least squares on N "
       "un-augmented training images (0: off)", ge=0),
    _s("block_steps", int, 0, "after reconstruction, train each block holding a replaced op for N steps (batches of "
       "the reconstruction images) to give the original block's output from the converted model's input: block-wise "
       "distillation (0: off; needs --reconstruct-images)", ge=0),
    _s("block_lr", float, 1e-3, "peak learning rate of --block-steps (Adam, cosine to 0)", gt=0),
    _s("max_steps", int | None, None, "stop (resumably) after this many steps in total; not kept by --resume", ge=1),
    _s("log_every", int, 20, "write a step record to metrics.jsonl every N steps", ge=1),
    _s("eval_every", int, 1, "validate every N epochs and after the last one (the best epoch is chosen among the "
       "validated ones), when val_every does not apply", ge=1),
    _s("val_every", int | None, None, "validate every N training images and at the end; the best point's weights "
       "are exported (default: 4 points per run when it is shorter than 3 epochs, else every eval_every epochs)",
       ge=1),
    _s("eval_teacher", bool, True, "validate the teacher once before training"),
)
"""Every setting, in the order of the config's fields."""


def settings() -> dict[str, Setting]:
    """:data:`SETTINGS` by name."""
    return {s.name: s for s in SETTINGS}
