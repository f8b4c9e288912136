"""benchmarks/deploy_cpu.py --quick end to end: one small model at 64 px on every CPU backend (PyTorch llga and eager,
ONNX Runtime fp32 and int8, OpenVINO fp32 and int8), the machine stamped with its CPU model and ISA, a row per batch
size with a speed-up in every backend column."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "deploy_cpu.py"


@pytest.mark.slow  # about 25 s on 2 quiet cores: two exports, two quantizations, six backends
def test_deploy_cpu_quick_runs_every_backend() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1"], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    machine = proc.stdout.splitlines()[0]
    assert machine.startswith("Machine: ") and "ISA " in machine and "openvino" in machine
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| model |"))
    assert header.split(" | ")[3:] == ["llga", "eager", "ORT fp32", "ORT int8", "OpenVINO fp32", "OpenVINO int8 |"]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| mobilenetv2_050 | maxpool |")]
    assert [row.split(" | ")[2] for row in rows] == ["1", "4"]
    for row in rows:
        cells = row.strip("| ").split(" | ")[3:]
        assert len(cells) == 6 and all(re.match(r"^(\*\*)?\d+\.\d\dx", cell) for cell in cells), row
        assert sum(cell.startswith("**") for cell in cells) == 1  # the original's fastest backend, in bold
