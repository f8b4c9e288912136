"""The planner's proxy of the fine-tuned result: a short distillation of each candidate from the original.

Accuracy right after conversion (with reconstruction and BatchNorm re-estimation) does not predict the order the
candidates end in after fine-tuning (issue 28: 10-80% for conversions, 86% for pruning, before a fine-tune that
brings them all within a few points). :class:`DistillProxy` gives each candidate a miniature of the fine-tune
before it is scored: ``images`` training images through the fine-tune's own machinery
(:class:`~pfconvert.recover.finetune.config.FinetuneConfig` defaults: the distillation loss, augmentation, optimizer
and schedule shape, compressed to the proxy's length, built by
:func:`~pfconvert.recover.finetune.engine.build_engine` and stepped by
:func:`~pfconvert.recover.finetune.engine.train_step`; the batches are the run's own
(:func:`~pfconvert.recover.finetune.loaders.train_loader`)).

The teacher is a frozen copy of the original made once: the original's weights and flags are never touched. Each
candidate starts from the same RNG state (``seed``) and sees the same batches, so the proxy is deterministic under
the seed and every candidate gets the same share. The training images come from the same carve of the training
split as the planner's validation split (seed 0 of :func:`~pfconvert.data.datasets.open_split`), so no validation
image is trained on; the seed only orders and augments the batches. Runs on the CPU (the planner scores there).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.config import DataConfig
from ..errors import DataError

__all__ = ["DEFAULT_PROXY_IMAGES", "PROXY_LR", "DistillProxy"]

DEFAULT_PROXY_IMAGES = 2048
"""Training images of each candidate's proxy distillation by default (1.3% of a default 3-epoch fine-tune on the
54,000 training images Fashion-MNIST keeps after the validation carve; the lr probe's length per rate)."""
PROXY_LR = 1e-3
"""The proxy's peak learning rate: the fine-tune's default (:data:`~pfconvert.recover.finetune.engine.DEFAULT_LR`);
one rate for every candidate (a probe per candidate would cost four proxies)."""


@dataclass
class DistillProxy:
    """A short distillation of a candidate from the original on ``images`` training images (module docstring).

    Build it with :meth:`build`; call it on a candidate (a copy the caller may change: it is trained in place).
    """

    teacher: nn.Module
    config: Any  # FinetuneConfig
    bundle: Any  # DataBundle
    images: int
    lr: float
    steps: int

    @classmethod
    def build(cls, original: nn.Module, data: str, data_cfg: DataConfig, *, images: int = DEFAULT_PROXY_IMAGES,
              val_split: float = 0.1, seed: int = 0, lr: float = PROXY_LR, batch_size: int = 64) -> DistillProxy:
        """Open the training split (the planner's carve) and freeze a copy of ``original`` as the teacher.

        Raises:
            DataError: ``images`` below 1, or fewer training images than one batch.
        """
        from ..recover.finetune.config import FinetuneConfig
        from ..recover.finetune.loaders import prepare_data
        from ..recover.metrics import infer_num_classes

        if images < 1:
            raise DataError(f"proxy images must be at least 1 (0 turns the proxy off), got {images}")
        config = FinetuneConfig(data=data, img_size=data_cfg.input_size[-1], val_split=val_split, seed=seed,
                                batch_size=min(batch_size, images), workers=0, device="cpu", lr=lr,
                                train_images=images, compile=False, ema=False)
        bundle = prepare_data(config.model_copy(update={"seed": 0}), data_cfg,
                              infer_num_classes(original, data_cfg.input_size))
        teacher = copy.deepcopy(original).eval().requires_grad_(False)
        return cls(teacher, config, bundle, images, lr, max(1, images // config.batch_size))

    @property
    def train_size(self) -> int:
        """Training images the proxy draws from."""
        return len(self.bundle.train)

    def share(self, epochs: int = 3) -> float:
        """The proxy's images as a share of a fine-tune of ``epochs`` passes over the training split."""
        return self.steps * self.config.batch_size / (epochs * self.train_size)

    def describe(self) -> str:
        """One line: what each candidate gets before it is scored."""
        done = self.steps * self.config.batch_size
        return (f"proxy: each candidate distilled from the original on {done} training images ({self.steps} steps of "
                f"{self.config.batch_size}, lr {self.lr:g}, the fine-tune's loss, augmentation and schedule; "
                f"{self.share():.1%} of a default 3-epoch fine-tune) before it is scored; seed {self.config.seed}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {"images": self.steps * self.config.batch_size, "steps": self.steps,
                "batch_size": self.config.batch_size, "lr": self.lr, "seed": self.config.seed,
                "train_split_images": self.train_size, "share_of_3_epochs": self.share()}

    def __call__(self, student: nn.Module) -> None:
        """Distil ``student`` in place; every RNG is as before the call, the student is left in eval mode on the
        CPU in the contiguous layout."""
        from ..recover.dist import DistContext
        from ..recover.finetune.checkpoint import capture_rng, restore_rng
        from ..recover.finetune.engine import build_engine, train_step
        from ..recover.finetune.loaders import train_loader
        from ..recover.precision import resolve_precision

        precision = resolve_precision(torch.device("cpu"), channels_last=False)
        rng = capture_rng()
        try:
            torch.manual_seed(self.config.seed)
            engine = build_engine(student, self.teacher, self.config, precision, DistContext(device=precision.device),
                                  self.steps, self.steps, lr=self.lr)
            engine.task.train()
            done, epoch = 0, 0
            while done < self.steps:
                for images, targets in train_loader(self.bundle, self.config, epoch):
                    done += 1
                    train_step(engine, images, targets, done)
                    if done == self.steps:
                        break
                epoch += 1
            engine.task.remove_hooks()
        finally:
            restore_rng(rng)
        student.eval()
        self.teacher.eval()
