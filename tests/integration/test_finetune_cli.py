"""``pfconvert finetune`` / ``pfconvert eval`` end to end on a converted artifact: results, reload, errors, Ctrl-C."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

import pfconvert
import pfconvert.cli.evaluate  # noqa: F401  (registers `eval`)
import pfconvert.cli.finetune  # noqa: F401  (registers `finetune`)
from pfconvert.recover.finetune import FinetuneConfig, Reporter, family_defaults, finetune
from pfconvert.recover.finetune.checkpoint import load_checkpoint

FAST = ["--input-size", "32", "--batch-size", "16", "--limit-train", "96", "--limit-val", "48", "--workers", "0",
        "--bn-recalib-images", "64", "--quiet"]


run = run_cli

pytestmark = pytest.mark.slow  # trains or runs processes: all of it is in the full run only


@pytest.fixture()
def artifact(ft_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the converted test artifact."""
    return Path(shutil.copytree(ft_artifact, tmp_path / "artifact"))


def test_finetune_then_eval_reproduces_the_best_accuracy(artifact: Path, ft_fmnist_dir: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["finetune", str(artifact), "--data", str(ft_fmnist_dir), "--epochs", "2", *FAST,
                          "--reconstruct-images", "32", "--json"], capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "completed" and summary["global_step"] == 12 and summary["best"]["val_count"] == 48
    assert {"teacher", "converted", "reconstructed", "bn_recalib_images"} <= set(summary["start"])
    assert summary["start"]["reconstruction"]["images"] == 32
    code, out, err = run(["eval", str(artifact), "--data", str(ft_fmnist_dir), "--split", "val", "--workers", "0",
                          "--original", "--json"], capsys, monkeypatch)  # the fine-tune's val split and input size
    assert code == 0, err
    report = json.loads(out)
    assert report["weights"] == "finetuned.safetensors" and report["input_size"] == [3, 32, 32]
    assert report["split_description"] == summary["splits"]["val"]
    assert report["metrics"]["student"]["top1"] == pytest.approx(summary["best"]["val_top1"])
    assert report["metrics"]["original"]["top1"] == pytest.approx(summary["start"]["teacher"]["top1"])
    model = pfconvert.load(artifact)  # prefers finetuned.safetensors
    exported = load_file(str(artifact / "finetuned.safetensors"))
    assert all(torch.equal(value, exported[key]) for key, value in model.state_dict().items())


def test_summary_table_goes_to_stdout_and_progress_to_stderr(artifact: Path, ft_fmnist_dir: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["finetune", str(artifact), "--data", str(ft_fmnist_dir), "--epochs", "1", *FAST[:-1]]
    code, out, err = run(args, capsys, monkeypatch)
    assert code == 0, err
    assert "fine-tuning completed" in out and re.search(r"best \((epoch 1|the start|step \d+, epoch 1)\)", out)
    assert "epoch 1:" not in out
    assert "epoch 1: train loss" in err and "val top-1" in err and "teacher (original model)" in err


@pytest.mark.parametrize("args, message", [
    ([], "--data is required"),
    (["--data", "/nonexistent/data"], "data path not found"),
    (["--data", "FOLDER"], "the model has 10 classes but .* has 3; convert the model with --num-classes 3"),
    (["--data", "FMNIST", "--lr", "-1"], "invalid fine-tuning setting lr"),
    (["--data", "FMNIST", "--resume"], "no checkpoint at"),
])
def test_user_errors_are_one_line_messages(args: list[str], message: str, artifact: Path, ft_fmnist_dir: Path,
                                           ft_folder_dir: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    args = [{"FOLDER": str(ft_folder_dir), "FMNIST": str(ft_fmnist_dir)}.get(arg, arg) for arg in args]
    code, out, err = run(["finetune", str(artifact), *args, *FAST], capsys, monkeypatch)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith("Error:")
    assert re.search(message, " ".join(err.split())), err
    assert not (artifact / "checkpoints").exists()  # nothing was started


def _launch(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m pfconvert ARGV`` in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "pfconvert", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_step(metrics: Path, step: int, process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Block until ``metrics.jsonl`` records training step ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(json.loads(line).get("step", 0) >= step for line in lines if '"event": "step"' in line):
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


@pytest.fixture(scope="module")
def uninterrupted(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Final checkpoint of an uninterrupted run with the settings of :data:`FAST` (2 epochs, 6 steps each), and the
    family defaults the command adds for this depthwise conversion."""
    out = Path(shutil.copytree(ft_artifact, tmp_path_factory.mktemp("uninterrupted") / "artifact"))
    family, defaults = family_defaults(ft_artifact)
    assert family == "depthwise" and defaults["freeze_bn"] and defaults["reconstruct_images"] == 16384
    assert defaults["block_steps"] == 500
    assert family_defaults(ft_artifact, 500)[1]["reconstruct_images"] == 500  # never more than the run's budget
    config = FinetuneConfig(data=str(ft_fmnist_dir), epochs=2, img_size=32, batch_size=16, limit_train=96,
                            limit_val=48, workers=0, bn_recalib_images=64, log_every=1, **defaults)
    assert finetune(out, config, reporter=Reporter()).status == "completed"
    return out / "checkpoints" / "last.pt"


def test_a_depthwise_conversion_gets_its_family_recipe_unless_a_flag_says_otherwise(
        artifact: Path, ft_fmnist_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["finetune", str(artifact), "--data", str(ft_fmnist_dir), "--epochs", "1", *FAST[:-1], "--max-steps", "1",
            "--augment", "light", "--reconstruct-images", "16", "--json"]
    code, out, err = run(args, capsys, monkeypatch)
    assert code == 0, err
    config = json.loads((artifact / "finetune.json").read_text())["config"]
    assert (config["freeze_bn"], config["augment"], config["reconstruct_images"], config["block_steps"]) == \
        (True, "light", 16, 500)
    start = json.loads((artifact / "metrics.jsonl").read_text().splitlines()[0])
    assert start["reconstruction"]["blocks"] > 0  # the family's block-wise distillation ran on those 16 images
    assert "depthwise conversion: fine-tuning with --freeze-bn" in " ".join(err.split())


@pytest.mark.parametrize("kill, workers, at_step", [
    (signal.SIGINT, "2", 1),  # Ctrl-C in epoch 1 (at its first logged step: a tiny run can finish an epoch in
    #                            the time it takes to notice a later one): saves a mid-epoch checkpoint, exits 130
    (signal.SIGKILL, "0", 7),  # a hard kill in epoch 2: the end-of-epoch-1 checkpoint (step 6) survives
    (signal.SIGKILL, "0", 10),  # a hard kill after the validation point at step 9 (epoch 2, step 3): its checkpoint
], ids=["ctrl-c-with-2-loader-workers", "sigkill", "sigkill-after-a-mid-epoch-validation-point"])
def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(
        kill: signal.Signals, workers: str, at_step: int, artifact: Path, ft_fmnist_dir: Path, uninterrupted: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--data", str(ft_fmnist_dir), "--epochs", "2", *FAST, "--log-every", "1", "--workers", workers]
    process = _launch(["finetune", str(artifact), *args], tmp_path)
    _wait_for_step(artifact / "metrics.jsonl", at_step, process)
    process.send_signal(kill)
    _, stderr = process.communicate(timeout=120)
    saved = load_checkpoint(artifact / "checkpoints" / "last.pt")["run"]
    if kill == signal.SIGINT:
        assert process.returncode == 130 and "Traceback" not in stderr, stderr
        assert "stopped by SIGINT" in " ".join(stderr.split())
        assert saved["epoch"] == 0 and 0 < saved["step_in_epoch"] <= saved["steps_per_epoch"] == 6
    else:  # the 2 x 6-step run is validated every 3 steps: checkpoints at steps 3, 6 (epoch 1's end), 9, 12
        assert process.returncode == -signal.SIGKILL
        # the last checkpoint is a validation point at or after the last one before the step seen (the kill can
        # land a few steps late on a busy machine, never before the step it was sent at)
        assert saved["global_step"] % 3 == 0 and saved["global_step"] >= 3 * ((at_step - 1) // 3)
        assert (saved["epoch"], saved["step_in_epoch"]) == divmod(saved["global_step"], 6)
        assert saved["history"][-1]["step"] == saved["global_step"] and "val_top1" in saved["history"][-1]
    code, _, err = run(["finetune", str(artifact), "--resume", "--quiet", "--workers", "0"], capsys, monkeypatch)
    assert code == 0, err
    want = load_checkpoint(uninterrupted)["engine"]["model"]
    got = load_checkpoint(artifact / "checkpoints" / "last.pt")["engine"]["model"]
    assert all(torch.equal(want[key], got[key]) for key in want)  # whatever the loader workers or the kill
    steps = [json.loads(line)["step"] for line in (artifact / "metrics.jsonl").read_text().splitlines()
             if '"event": "step"' in line]
    assert steps == list(range(1, 13))  # steps redone after the kill are logged once
