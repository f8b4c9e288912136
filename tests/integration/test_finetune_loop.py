"""The fine-tuning run: files it writes, exact resume after a stop mid-epoch, refusals, NaN handling, EMA, compile."""

from __future__ import annotations

import copy
import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file

from pfconvert.data.config import resolve_data_config
from pfconvert.errors import ArtifactError, CheckpointError, TrainingError
from pfconvert.recover.bn import batchnorm_layers, recalibrate_batchnorm
from pfconvert.recover.finetune import FinetuneConfig, FinetuneResult, Reporter, run_finetune
from pfconvert.recover.finetune._artifact_io import save_finetuned
from pfconvert.recover.finetune.checkpoint import load_checkpoint
from pfconvert.recover.finetune.loop import StepEvent
from pfconvert.recover.finetune.start import Accuracy
from pfconvert.recover.precision import resolve_precision

STEPS_PER_EPOCH = 5  # limit_train 160 / batch 32

pytestmark = pytest.mark.slow  # trains or runs processes: all of it is in the full run only


def _pair(seed: int = 0, **kwargs: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(student, teacher): a tiny timm model and a perturbed copy of it (the "converted" one)."""
    torch.manual_seed(seed)
    teacher = timm.create_model("test_efficientnet", num_classes=10, **kwargs)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return student, teacher


def _config(data: Path, **overrides: Any) -> FinetuneConfig:
    values = dict(data=str(data), epochs=2, batch_size=32, img_size=32, limit_train=160, limit_val=64, workers=0,
                  bn_recalib_images=64, log_every=1, val_split=0.2,  # 96 validation images, of which 64
                  lr=1e-3)  # given: the learning-rate probe has tests of its own (test_finetune_lr.py)
    return FinetuneConfig(**{**values, **overrides})


def _run(pair: tuple[torch.nn.Module, torch.nn.Module], config: FinetuneConfig, out: Path,
         reporter: Reporter | None = None, **kwargs: Any) -> FinetuneResult:
    student, teacher = pair
    return run_finetune(student, teacher, config, out, data_cfg=resolve_data_config(teacher).with_size(config.img_size),
                        reporter=reporter or Reporter(), export=save_finetuned, **kwargs)


class _SigintAt(Reporter):
    """Sends this process a SIGINT (a Ctrl-C) when a given global step is reported."""

    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, event: StepEvent) -> None:
        if event.global_step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def reference(ft_fmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneResult, Path]:
    """An uninterrupted 2-epoch run (augmentation and dropout on, so RNG states matter for resuming)."""
    out = tmp_path_factory.mktemp("reference")
    config = _config(ft_fmnist_dir, augment="timm")
    return _run(_pair(drop_rate=0.3), config, out), out


def test_run_writes_checkpoints_logs_summary_and_weights(reference: tuple[FinetuneResult, Path]) -> None:
    result, out = reference
    assert result.status == "completed" and result.global_step == result.total_steps == 2 * STEPS_PER_EPOCH
    start = result.start
    assert start.converted is not None and start.teacher is not None and start.batchnorm is not None
    assert start.reconstructed is None and start.reconstruction is None
    assert (start.recalibrated is not None) == start.batchnorm.kept  # measured only when the re-estimation is kept
    assert set(start.to_dict()) - {"recalibrated", "bn_recalib", "bn_recalib_reverted"} == {
        "converted", "teacher", "bn_recalib_images"}
    assert result.best is not None and result.final is not None and result.final["epoch"] == 2
    assert 0.0 <= result.best["val_top1"] <= 100.0 and result.best["val_count"] == 64
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("epoch") == 2 and records[0]["event"] == "start"
    assert [r["step"] for r in records if r["event"] == "step"] == list(range(1, 11))
    assert json.loads((out / "finetune.json").read_text())["status"] == "completed"
    # a 2-epoch run is validated at 4 points (every 3 steps, and the end), not at each epoch's end
    assert [(r["event"], r["step"]) for r in records if "val_top1" in r] == [("val", 3), ("val", 6), ("val", 9),
                                                                             ("epoch", 10)]
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["run"]["best_step"] == result.best.get("step", 0) == best["run"]["global_step"]  # 0: the start
    exported = load_file(str(out / "finetuned.safetensors"))
    assert exported.keys() == best["engine"]["model"].keys()
    assert all(torch.equal(exported[key], value) for key, value in best["engine"]["model"].items())


@pytest.mark.parametrize("stop, at", [("max_steps", 7), ("sigint", 7), ("max_steps", 6), ("sigint", 6)])
def test_resume_after_a_mid_epoch_stop_ends_with_identical_weights(
        stop: str, at: int, reference: tuple[FinetuneResult, Path], ft_fmnist_dir: Path, tmp_path: Path) -> None:
    """Stops in the middle of the second epoch: after a validation point (7), and at one (6: max_steps validates it
    before stopping; a Ctrl-C there stops before it, and the resumed run validates it first)."""
    expected, ref_out = reference
    config = _config(ft_fmnist_dir, augment="timm")
    if stop == "max_steps":
        first = _run(_pair(drop_rate=0.3), config.model_copy(update={"max_steps": at}), tmp_path)
    else:
        first = _run(_pair(drop_rate=0.3), config, tmp_path, reporter=_SigintAt(at))
    assert first.status == ("stopped" if stop == "max_steps" else "interrupted") and first.global_step == at
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["run"]
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, at - STEPS_PER_EPOCH)  # in the middle of the second epoch
    assert saved["history"][-1]["step"] == (6 if stop == "max_steps" or at == 7 else 5)
    student, teacher = _pair(drop_rate=0.3)
    with torch.no_grad():  # the student's weights must come from the checkpoint, whatever they are now
        for param in student.parameters():
            param.normal_()
    resumed = _run((student, teacher), config, tmp_path, resume=True)
    assert resumed.status == "completed" and resumed.global_step == expected.global_step
    assert _untimed(resumed.final) == _untimed(expected.final)  # same losses and accuracies
    assert _untimed(resumed.best) == _untimed(expected.best)
    assert [_untimed(rec) for rec in load_checkpoint(tmp_path / "checkpoints" / "last.pt")["run"]["history"]] == [
        _untimed(rec) for rec in load_checkpoint(ref_out / "checkpoints" / "last.pt")["run"]["history"]]
    want = load_checkpoint(ref_out / "checkpoints" / "last.pt")["engine"]
    got = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["engine"]
    for part in ("model", "optimizer"):
        assert torch.equal(_flat(want[part]), _flat(got[part])), part
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "step"]
    assert steps == list(range(1, 11))  # the log has each step once


def _untimed(record: dict[str, Any] | None) -> dict[str, Any]:
    """An epoch record without its timings."""
    return {key: value for key, value in (record or {}).items() if key not in ("seconds", "images_per_s")}


def _flat(state: Any) -> torch.Tensor:
    """All tensors and numbers of a nested state, as one flat tensor (to compare states exactly)."""
    if isinstance(state, torch.Tensor):
        return state.detach().reshape(-1).double()
    if isinstance(state, dict):
        return torch.cat([_flat(state[key]) for key in sorted(state, key=str)] or [torch.zeros(0)])
    if isinstance(state, (list, tuple)):
        return torch.cat([_flat(item) for item in state] or [torch.zeros(0)])
    return torch.tensor([float(state)]) if isinstance(state, (int, float)) else torch.zeros(0)


def test_refuses_to_lose_an_earlier_run(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, epochs=1, max_steps=1, bn_recalib_images=0, eval_teacher=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _run(_pair(), config, tmp_path, resume=True)
    assert _run(_pair(), config, tmp_path).status == "stopped"
    with pytest.raises(ArtifactError, match="pass --resume to continue it or --overwrite"):
        _run(_pair(), config, tmp_path)
    with pytest.raises(TrainingError, match="lr is 0.5"):
        _run(_pair(), config.model_copy(update={"lr": 0.5}), tmp_path, resume=True)
    again = _run(_pair(), config, tmp_path, overwrite=True)
    assert again.status == "stopped" and again.global_step == 1


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        ft_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.recover.finetune import distill

    calls = {"n": 0}
    real = distill.kd_loss

    def poisoned(*args: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == STEPS_PER_EPOCH + 2 else loss

    monkeypatch.setattr(distill, "kd_loss", poisoned)
    config = _config(ft_fmnist_dir, bn_recalib_images=0, eval_teacher=False)
    with pytest.raises(TrainingError, match=r"non-finite at epoch 2, step 2 .*last good checkpoint kept: .*last\.pt"):
        _run(_pair(), config, tmp_path)
    kept = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["run"]
    # the validation point at step 6 (epoch 2, step 1) was checkpointed; nothing later
    assert (kept["epoch"], kept["global_step"]) == (1, STEPS_PER_EPOCH + 1)


def test_exploding_learning_rate_is_reported(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, lr=1e30, warmup_share=0, bn_recalib_images=0, eval_teacher=False)
    with pytest.raises(TrainingError, match=r"non-finite at epoch 1, step \d.*last good checkpoint kept: .*last\.pt"):
        _run(_pair(), config, tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["run"]["global_step"] == 0  # the start's


def test_batchnorm_recalibration_changes_statistics_only(ft_fmnist_dir: Path) -> None:
    student, _ = _pair()
    bn = student.bn1
    weights = {k: v.clone() for k, v in student.named_parameters()}
    before = bn.running_mean.clone()
    batches = [(torch.randn(8, 3, 32, 32) * 3 + 1, torch.zeros(8)) for _ in range(4)]
    used = recalibrate_batchnorm(student.eval(), batches, resolve_precision(torch.device("cpu")), max_batches=3)
    assert used == 24 and not student.training and bn.momentum == 0.1
    assert not torch.allclose(bn.running_mean, before) and int(bn.num_batches_tracked) == 3
    assert all(torch.equal(v, weights[k]) for k, v in student.named_parameters())


def test_batchnorm_re_estimation_that_raises_the_loss_is_undone(ft_fmnist_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.recover.finetune import runner

    def harmful(model: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
        for layer in batchnorm_layers(model):
            layer.running_var.fill_(1e-6)  # normalising by ~0: logits blow up, the loss rises
        return 32

    student, teacher = _pair()
    assert all(torch.equal(bn.running_var, torch.ones_like(bn.running_var)) for bn in batchnorm_layers(student))
    monkeypatch.setattr(runner, "recalibrate_batchnorm", harmful)
    result = _run((student, teacher), _config(ft_fmnist_dir, epochs=1, max_steps=1), tmp_path)
    bn = result.start.batchnorm
    assert bn is not None and not bn.kept and bn.loss_after > bn.loss_before
    assert result.start.recalibrated is None and "bn_recalib_reverted" in result.start.to_dict()
    # undone: after the one training step (momentum 0.1) each running variance is 0.9 * 1 + 0.1 * batch variance
    assert all(float(bn.running_var.min()) >= 0.9 - 1e-5 for bn in batchnorm_layers(student))


def test_ema_model_is_validated_and_exported(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, epochs=1, ema=True, ema_decay=0.5, bn_recalib_images=0, eval_teacher=False)
    result = _run(_pair(), config, tmp_path)
    engine = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["engine"]
    exported = load_file(str(tmp_path / "finetuned.safetensors"))
    assert result.status == "completed"
    assert all(torch.equal(exported[key], engine["ema"][f"module.{key}"]) for key in exported)
    assert any(not torch.equal(exported[key], engine["model"][key]) for key in exported)


def test_compiled_run_trains(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, epochs=1, compile=True, compile_backend="eager", bn_recalib_images=0,
                     eval_teacher=False)
    result = _run(_pair(), config, tmp_path)
    assert result.status == "completed" and result.final is not None and result.final["val_count"] == 64
    keys = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["engine"]["model"].keys()
    assert not any(key.startswith("_orig_mod") for key in keys)  # saved from the plain module


def test_eval_every_validates_only_every_nth_and_the_last_epoch(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, epochs=3, eval_every=2, bn_recalib_images=0, eval_teacher=False)
    result = _run(_pair(), config, tmp_path)
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [rec for rec in epochs if rec["event"] == "epoch"]
    assert [rec["epoch"] for rec in epochs] == [1, 2, 3]
    assert ["val_top1" in rec for rec in epochs] == [False, True, True]
    assert not epochs[0]["best"] and result.best is not None and result.best["epoch"] in (2, 3)
    assert result.final is not None and result.final["epoch"] == 3 and (tmp_path / "finetuned.safetensors").is_file()


def test_val_every_validates_inside_the_epoch_and_exports_the_best_point(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    config = _config(ft_fmnist_dir, epochs=1, val_every=64, bn_recalib_images=0, eval_teacher=False)  # 2 steps
    result = _run(_pair(), config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"], r["images"]) for r in records if "val_top1" in r] == [
        ("val", 2, 64), ("val", 4, 128), ("epoch", 5, 160)]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert result.best is not None
    last_best = max((r["step"] for r in records if r.get("best")), default=0)  # 0: none beat the start
    assert best["run"]["global_step"] == last_best == (result.best["step"] if result.best["epoch"] else 0)
    exported = load_file(str(tmp_path / "finetuned.safetensors"))
    assert all(torch.equal(exported[key], best["engine"]["model"][key]) for key in exported)


def test_a_run_that_never_beats_its_start_keeps_the_start_weights(ft_fmnist_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.recover.finetune import runner

    real = runner._Job._evaluate

    def start_scores_high(job: Any, model: torch.nn.Module, what: str) -> Accuracy:
        metrics = real(job, model, what)
        return replace(metrics, top1=99.0) if job.run_state is None else metrics  # before training: the start

    monkeypatch.setattr(runner._Job, "_evaluate", start_scores_high)
    student, teacher = _pair()
    before = {key: value.clone() for key, value in student.state_dict().items()}
    config = _config(ft_fmnist_dir, epochs=1, bn_recalib_images=0, eval_teacher=False)
    result = _run((student, teacher), config, tmp_path)
    exported = load_file(str(tmp_path / "finetuned.safetensors"))
    assert result.status == "completed" and result.best is not None and result.best["epoch"] == 0
    assert result.best["val_top1"] == 99.0 and result.final is not None and result.final["epoch"] == 1
    assert all(torch.equal(exported[key], before[key]) for key in exported)  # the start's weights, not the trained
    assert any(not torch.equal(student.state_dict()[key], before[key]) for key in exported)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["run"]["global_step"] == 0


def test_the_start_is_exported_until_an_epoch_beats_it(reference: tuple[FinetuneResult, Path]) -> None:
    result, out = reference
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [rec for rec in records if rec["event"] == "epoch"]
    start = records[0]
    start_top1 = (start.get("recalibrated") or start["converted"])["top1"]
    best_epochs = [rec["epoch"] for rec in epochs if rec["best"]]
    assert all(rec["val_top1"] > start_top1 for rec in epochs if rec["best"])
    assert result.best is not None and (result.best["epoch"] == (best_epochs[-1] if best_epochs else 0))
