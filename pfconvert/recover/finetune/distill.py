"""Logit distillation as a task module: student + frozen teacher in, a dict of losses out.

Shaped like timm's ``timm.task.LogitDistillationTask`` (the same loss dict and the same KL formula), but the
teacher is an already-built module (the unconverted original) that sees exactly the student's input, since both share
the original model's preprocessing; and the teacher is skipped entirely when its weight is 0.

``loss = task_weight * CE(student, labels) + kd_weight * KL(softmax(teacher / T) || softmax(student / T)) * T^2``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import create_classification_loss
from torch import nn

__all__ = ["kd_loss", "DistillationTask"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between temperature-softened teacher and student distributions, scaled by T^2 (Hinton et al.).

    Computed in float32 whatever the autocast dtype, averaged over the batch.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


class DistillationTask(nn.Module):
    """Student forward + teacher forward (no grad) + weighted CE and KD losses.

    Args:
        student: the model being trained (may later be replaced by a DDP or compiled wrapper of itself).
        teacher: the frozen reference model, or None to train on labels only.
        temperature: softening temperature T of the KD term.
        kd_weight: weight of the KD term; 0 skips the teacher forward.
        task_weight: weight of the label cross-entropy.
        smoothing: label smoothing of the cross-entropy (timm's ``create_classification_loss``).
        freeze_bn: keep the student's BatchNorm layers in eval mode while training: they normalise with their
            running statistics (which stay fixed) instead of batch statistics; their affine weights still train.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, temperature: float = 4.0,
                 kd_weight: float = 1.0, task_weight: float = 1.0, smoothing: float = 0.0,
                 freeze_bn: bool = False) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        self.student = student
        self.teacher = teacher if kd_weight > 0 else None
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
        self.criterion = create_classification_loss(smoothing=smoothing)
        self.temperature, self.kd_weight, self.task_weight = temperature, kd_weight, task_weight

    def train(self, mode: bool = True) -> DistillationTask:
        """Set the student's mode; the teacher always stays in eval mode (fixed BN statistics, no dropout), and so do
        the student's BatchNorm layers with ``freeze_bn``."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        if self.freeze_bn:
            for module in self.student.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{'loss', 'output', 'task_loss', 'kd_loss'}`` for one batch; only ``loss`` carries gradients."""
        logits = self.student(images)
        task = self.criterion(logits.float(), targets)
        if self.teacher is None:
            distill = torch.zeros((), device=logits.device)
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            distill = kd_loss(logits, teacher_logits, self.temperature)
        loss = self.task_weight * task + self.kd_weight * distill
        return {"loss": loss, "output": logits.detach(), "task_loss": task.detach(), "kd_loss": distill.detach()}
