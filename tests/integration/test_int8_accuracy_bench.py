"""benchmarks/int8_accuracy.py end to end on a tiny artifact: fp32 and int8 top-1 of the original and the converted
model side by side, a delta per int8 runtime, the machine stamped, and a case cached for ``--reuse``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "int8_accuracy.py"


@pytest.mark.slow  # two exports and two quantizations of a tiny model, 64 test images
def test_int8_accuracy_tabulates_fp32_and_int8_for_both_models(ft_artifact: Path, ft_fmnist_dir: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "int8"
    args = [sys.executable, str(SCRIPT), "--case", f"tiny maxpool, 32 px={ft_artifact}", "--data", str(ft_fmnist_dir),
            "--runtimes", "ort-int8", "--calib-images", "16", "--limit", "64", "--workers", "0", "--out", str(out),
            "--max-drop", "1", "--control-images", "16"]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Machine: ") and "ISA " in lines[0]
    header = next(line for line in lines if line.startswith("| case |"))
    controlled = "OpenVINO CPU int8 (NNCF PTQ), accuracy-controlled to 1"
    assert header.split(" | ")[2:] == ["PyTorch fp32", "ONNX Runtime CPU int8 (static QDQ)", controlled,
                                       "ort-int8 - fp32", "ov-int8 controlled - fp32 |"]
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| tiny maxpool")]
    assert [row[1] for row in rows] == ["original", "converted"]
    cached = json.loads((out / "tiny-maxpool-32-px.json").read_text())
    for row, model in zip(rows, ("original", "student")):
        fp32, int8 = cached["top1"][model], cached["top1"][f"{model} on ONNX Runtime CPU int8 (static QDQ)"]
        assert float(row[2]) == pytest.approx(fp32, abs=0.01) and float(row[3]) == pytest.approx(int8, abs=0.01)
        assert float(row[5]) == pytest.approx(int8 - fp32, abs=0.02)
        assert float(row[6]) == pytest.approx(cached["top1"][f"{model} on {controlled}"] - fp32, abs=0.02)
    assert cached["count"] == 64 and cached["calib_images"] == 16
    again = subprocess.run([*args, "--reuse"], check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reused" in again.stderr


def test_int8_accuracy_refuses_an_unknown_runtime_without_a_traceback(ft_artifact: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--case", f"x={ft_artifact}", "--runtimes", "tensorrt",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error: --runtimes 'tensorrt'" in proc.stderr and "Traceback" not in proc.stderr
