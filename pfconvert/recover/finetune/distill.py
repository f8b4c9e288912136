"""Logit distillation as a task module: student + frozen teacher in, a dict of losses out.

Shaped like timm's ``timm.task.LogitDistillationTask`` (the same loss dict and the same KL formula), but the
teacher is an already-built module (the unconverted original) that sees exactly the student's input, since both share
the original model's preprocessing; and the teacher is skipped entirely when its weight is 0.

``loss = task_weight * CE(student, labels) + kd_weight * KL(softmax(teacher / T) || softmax(student / T)) * T^2``
``       + feature_weight * mean over blocks of ||f_student - f_teacher||^2 / ||f_teacher||^2``

The feature term (off by default) matches the output of each block that holds a replaced layer (the blocks of
:func:`feature_blocks`) to the teacher's output of the same block, read with forward hooks: a per-block target that
tells each converted block what its output should be, not only what the logits should be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import create_classification_loss
from torch import nn

__all__ = ["kd_loss", "feature_loss", "feature_blocks", "DistillationTask"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between temperature-softened teacher and student distributions, scaled by T^2 (Hinton et al.).

    Computed in float32 whatever the autocast dtype, averaged over the batch.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared error of ``student`` against ``teacher``, over the teacher's mean square (scale-free), in float32."""
    diff = (student.float() - teacher.float()).pow(2).mean()
    return diff / teacher.float().pow(2).mean().clamp_min(1e-8)


def feature_blocks(student: nn.Module, teacher: nn.Module) -> list[str]:
    """The blocks holding a replaced layer, in the student's module order: for each path whose module differs in
    class between ``student`` and ``teacher`` (:func:`~pfconvert.recover.refit.changed_paths`), its block
    (``layer1.0``, ``blocks.2.1``, ``s1.b2``), else its parent module; kept when both models have it. A block's output
    has the same shape in both, since every replacement keeps its layer's output shape."""
    from ...graph.match import block_path
    from ..refit import changed_paths

    theirs = dict(teacher.named_modules())
    mine = dict(student.named_modules())
    blocks: list[str] = []
    for path in changed_paths(student, teacher):
        block = block_path(path) or path.rpartition(".")[0]
        if block and block in theirs and block in mine and block not in blocks:
            blocks.append(block)
    return blocks


class _Taps:
    """Forward hooks that keep the latest output of each named block of one model."""

    def __init__(self, model: nn.Module, paths: list[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [model.get_submodule(p).register_forward_hook(self._keep(p)) for p in paths]

    def _keep(self, path: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                self.outputs[path] = output
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        """Unregister the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles, self.outputs = [], {}


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
        feature_weight: weight of the feature term; 0 (default) skips it.
        feature_paths: the blocks whose outputs are matched (default: :func:`feature_blocks`).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, temperature: float = 4.0,
                 kd_weight: float = 1.0, task_weight: float = 1.0, smoothing: float = 0.0,
                 freeze_bn: bool = False, feature_weight: float = 0.0,
                 feature_paths: list[str] | None = None) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        self.student = student
        self.teacher = teacher if kd_weight > 0 or feature_weight > 0 else None
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
        self.feature_weight = feature_weight if self.teacher is not None else 0.0
        self.feature_paths: list[str] = []
        self._taps: tuple[_Taps, _Taps] | None = None
        if self.feature_weight > 0:
            assert self.teacher is not None
            self.feature_paths = feature_paths if feature_paths is not None else feature_blocks(student, self.teacher)
            self._taps = (_Taps(student, self.feature_paths), _Taps(self.teacher, self.feature_paths))
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

    def remove_hooks(self) -> None:
        """Unregister the feature hooks from both models (a task built for a learning-rate probe, then dropped)."""
        for taps in self._taps or ():
            taps.remove()
        self._taps = None

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{'loss', 'output', 'task_loss', 'kd_loss', 'feature_loss'}`` for one batch; only ``loss`` carries
        gradients."""
        logits = self.student(images)
        task = self.criterion(logits.float(), targets)
        zero = torch.zeros((), device=logits.device)
        distill, features = zero, zero
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            if self.kd_weight > 0:
                distill = kd_loss(logits, teacher_logits, self.temperature)
        if self._taps is not None:
            mine, theirs = self._taps[0].take(), self._taps[1].take()
            pairs = [(mine[p], theirs[p]) for p in self.feature_paths if p in mine and p in theirs]
            if pairs:
                features = torch.stack([feature_loss(s, t) for s, t in pairs]).mean()
        loss = self.task_weight * task + self.kd_weight * distill + self.feature_weight * features
        return {"loss": loss, "output": logits.detach(), "task_loss": task.detach(), "kd_loss": distill.detach(),
                "feature_loss": features.detach()}
