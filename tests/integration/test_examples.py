"""The examples run end to end on real data: the Fashion-MNIST study (``--quick``: a few hundred images) and the
public-API quickstart."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "fashion_mnist" / "run.py"

pytestmark = pytest.mark.slow  # trains or runs processes: all of it is in the full run only


def _finetune_batch(model: str) -> int:
    """The example pipeline's fine-tune batch size (read from the script, so the test follows its recipe)."""
    return runpy.run_path(str(SCRIPT), run_name="fashion_mnist_example")["PIPELINES"][model].finetune_batch_size


def test_quick_run_trains_converts_finetunes_and_reports(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(ft_fmnist_dir), "--out", str(out),
                           "--models", "mobilenetv2_050", "--rules", "maxpool", "--recipes", "default", "features", "lowres"],
                          check=False, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["rule"], r["recipe"]) for r in rows] == [("mobilenetv2_050", "maxpool", recipe)
                                                                    for recipe in ("default", "features", "lowres")]
    recipes = [json.loads((out / "mobilenetv2_050" / d / "finetune.json").read_text())["config"]
               for d in ("maxpool", "maxpool.features", "maxpool.lowres")]
    assert [(c["feature_weight"], c["img_size"]) for c in recipes] == [(0.0, 64), (1.0, 64), (0.0, 32)]
    # the cheaper low-resolution fine-tune fits more images in the same compute budget
    assert rows[2]["finetune_images_per_epoch"] > rows[0]["finetune_images_per_epoch"]
    row = rows[0]
    for key in ("original_top1", "converted_top1", "finetuned_top1"):
        assert 0.0 <= row[key] <= 100.0
    assert row["gap"] == round(row["original_top1"] - row["finetuned_top1"], 2)
    assert 0 <= row["best_epoch"] <= 1  # --quick fine-tunes 1 epoch; 0 is the start, kept when the epoch is worse
    assert row["params"][1] < row["params"][0] and row["macs"][1] < row["macs"][0]
    # at least one fine-tune batch, even on the tiny --quick budget
    assert row["finetune_images_per_epoch"] >= _finetune_batch("mobilenetv2_050")
    assert row["budget_compute_ratio"] > 0
    assert {k.split(" bs")[0] for k in row["latency_ratio_converted_over_original"]} >= {"ONNX Runtime CPU"}
    assert (out / "mobilenetv2_050" / "maxpool" / "report.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| mobilenetv2_050 | 64 | maxpool | lowres |" in table and table.startswith("Wall time ")
    assert table in proc.stdout  # the table is the data on stdout; progress goes to stderr


def test_quickstart_runs_through_the_public_api(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    script = SCRIPT.parents[1] / "quickstart.py"
    assert len(script.read_text().splitlines()) < 60
    proc = subprocess.run([sys.executable, str(script), "--data", str(ft_fmnist_dir), "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "17 layers replaced" in proc.stdout and "best validation top-1" in proc.stdout
    assert "| ONNX Runtime CPU | 1 |" in proc.stdout and (tmp_path / "mnv2-maxpool" / "model.onnx").is_file()
