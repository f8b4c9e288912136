"""benchmarks/ov_profile.py --quick end to end: mobilenetv2_050 and its ``maxpool`` conversion on OpenVINO int8, the
machine stamped, a latency line with the measured ratio and the ceiling, and a per-layer-kind table in which the
conversion's depthwise convs are gone and its max-pools are there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ov_profile.py"


@pytest.mark.slow  # about 15 s: two exports and two quantizations at 64 px
def test_ov_profile_quick_tables_the_layers_each_model_runs() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1"], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Machine: ") and "ISA " in lines[0] and "openvino" in lines[0]
    latency = next(line for line in lines if line.startswith("Latency: "))
    ratio, ceiling = (float(v) for v in re.findall(r"\*\*(\d+\.\d+)x\*\*", latency))
    assert ratio > 0 and ceiling >= ratio  # the ceiling only takes time away from the converted model
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:] for line in lines
            if line.startswith("| ") and not line.startswith("| layer kind")}
    assert rows["GroupConvolution I8"][2] == "0" and int(rows["GroupConvolution I8"][0]) == 17  # depthwise convs
    assert int(rows["MaxPool I8"][2]) == 17 and rows["MaxPool I8"][0] == "0"  # ... became int8 max-pools
    assert "the other layers, and time between layers" in rows


def test_ov_profile_refuses_a_case_without_a_rule() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "resnet50"], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "expected MODEL:RULE" in proc.stderr and "Traceback" not in proc.stderr
