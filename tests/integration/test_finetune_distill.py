"""Distillation loss: the KD term matches timm's, the weights combine as documented, the teacher stays frozen."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.task import LogitDistillationTask

from pfconvert.recover.finetune.distill import DistillationTask, kd_loss


@pytest.fixture()
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = timm.create_model("test_efficientnet", num_classes=10)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.classifier.weight.mul_(0.5)
    return student, teacher


def test_kd_loss_matches_timm_logit_distillation(pair) -> None:
    student, teacher = pair
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    ours = DistillationTask(student, teacher, temperature=3.0, kd_weight=0.7, task_weight=0.3)
    theirs = LogitDistillationTask(student, teacher, criterion=torch.nn.CrossEntropyLoss(), temperature=3.0,
                                   distill_loss_weight=0.7, task_loss_weight=0.3, verbose=False)
    ours.train()
    theirs.train()
    a, b = ours(images, targets), theirs(images, targets)
    for key in ("loss", "task_loss", "kd_loss"):
        torch.testing.assert_close(a[key], b[key].detach(), rtol=1e-5, atol=1e-6)


def test_kd_loss_is_zero_for_equal_logits_and_scaled_by_t_squared() -> None:
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 10)
    manual = F.kl_div(F.log_softmax(logits / 2, -1), F.softmax(other / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(kd_loss(logits, other, 2.0), manual)


def test_zero_kd_weight_skips_the_teacher(pair) -> None:
    student, teacher = pair
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    task = DistillationTask(student, teacher, kd_weight=0.0)
    out = task(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    assert task.teacher is None and not calls and out["kd_loss"].item() == 0.0
    torch.testing.assert_close(out["loss"], out["task_loss"])


def test_teacher_stays_frozen_in_eval_mode(pair) -> None:
    student, teacher = pair
    task = DistillationTask(student, teacher).train()
    out = task(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    out["loss"].backward()
    assert student.training and not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_frozen_batchnorm_normalises_with_fixed_statistics(pair) -> None:
    student, teacher = pair
    task = DistillationTask(student, teacher, freeze_bn=True).train()
    norms = [m for m in student.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in norms]
    assert norms and student.training and not any(m.training for m in norms)
    task(torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9]))["loss"].backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert all(m.weight.grad is not None for m in norms if m.weight is not None)
    DistillationTask(student, teacher).train()
    assert all(m.training for m in norms)


def test_feature_distillation_matches_the_blocks_holding_replacements() -> None:
    import pfconvert
    from pfconvert.recover.finetune.distill import feature_blocks, feature_loss

    torch.manual_seed(0)
    teacher = timm.create_model("mobilenetv2_050", num_classes=10).eval()
    student, _ = pfconvert.convert(teacher, "dw-hybrid", input_size=(3, 32, 32))
    blocks = feature_blocks(student, teacher)
    assert blocks and all(b.startswith("blocks.") and b.count(".") == 2 for b in blocks)  # blocks.S.B
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    task = DistillationTask(student, teacher, kd_weight=0.0, task_weight=0.0, feature_weight=2.0).train()
    out = task(images, targets)
    teacher_out, student_out = {}, {}
    with torch.no_grad():
        for model, store in ((teacher, teacher_out), (student, student_out)):
            hooks = [model.get_submodule(b).register_forward_hook(lambda m, a, o, b=b, s=store: s.__setitem__(b, o))
                     for b in blocks]
            model(images)
            for h in hooks:
                h.remove()
    expected = torch.stack([feature_loss(student_out[b], teacher_out[b]) for b in blocks]).mean()
    assert expected > 0
    torch.testing.assert_close(out["feature_loss"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["loss"], 2.0 * expected, rtol=1e-4, atol=1e-6)
    out["loss"].backward()  # the feature term alone trains the student's blocks
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    same = DistillationTask(teacher, copy.deepcopy(teacher), kd_weight=0.0, feature_weight=1.0, feature_paths=blocks)
    assert same(images, targets)["feature_loss"].item() == pytest.approx(0.0, abs=1e-6)
