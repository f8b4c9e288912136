"""benchmarks/recovery.py --quick end to end on real Fashion-MNIST images: a teacher trained from scratch (the
example's pipeline), converted, fine-tuned with the defaults (the probe's learning rate) and with a manual rate at the
same budget, and the default at a second budget; the table and results.json say what each run chose and reached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "recovery.py"

pytestmark = pytest.mark.slow  # trains a teacher and fine-tunes three students (about a minute on 2 idle cores)


def test_quick_run_tables_the_default_against_the_sweep_and_the_budgets(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(ft_fmnist_dir), "--out",
                           str(tmp_path)], check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (case,) = json.loads((tmp_path / "results.json").read_text())
    assert case["model"] == "mobilenetv2_050" and case["rule"] == "maxpool" and case["img_size"] == 32
    assert case["teacher_train_images"] == 256 and 0 <= case["teacher_test_top1"] <= 100
    rows = [(r["recipe"], r["budget_share"], r["train_images"]) for r in case["rows"]]
    assert rows == [("default", 0.3, 77), ("lr 1e-03", 0.3, 77), ("default", 1.0, 256)]
    default, manual = case["rows"][0], case["rows"][1]
    assert default["lr_method"] == "probe" and default["lr"] in (1e-3, 3e-4, 1e-4, 3e-5)
    assert len(default["lr_probe"]) == 4 and default["lr_probe_images"] == 4 * 32
    assert manual["lr_method"] == "given" and manual["lr"] == 1e-3 and manual["lr_probe_images"] == 0
    runs = tmp_path / "mobilenetv2_050" / "maxpool"
    starts = [json.loads((runs / tag / "finetune.json").read_text())["start"]
              for tag in ("0.3x-default", "0.3x-lr1e-03")]
    assert starts[0] == starts[1] and starts[0]["reconstruction"]["seconds"] > 0  # the sweep read the default's start
    for row in case["rows"]:
        assert row["start_state"] in ("reconstructed", "recalibrated")  # the depthwise family's reconstruction
        assert row["val_top1"] >= row["start_val_top1"]  # the best point: the start unless beaten
        assert row["test_images"] == 64
    assert "| default | " in proc.stdout and "(probe)" in proc.stdout
    assert "Default against the best of the manual sweep" in proc.stdout
    assert (tmp_path / "results.md").read_text().strip() == proc.stdout.strip()

    # --reuse keeps each finished run (its row.json), and scores again a finished run whose row is missing
    (tmp_path / "mobilenetv2_050" / "maxpool" / "0.3x-lr1e-03" / "row.json").unlink()
    again = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--reuse", "--data", str(ft_fmnist_dir), "--out",
                            str(tmp_path)], check=False, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    (reused,) = json.loads((tmp_path / "results.json").read_text())
    assert [r["seconds"] for r in reused["rows"]] == [case["rows"][0]["seconds"], None, case["rows"][2]["seconds"]]
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in reused["rows"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in case["rows"]]
