"""benchmarks/gpu_check.sh, the script run where a GPU is lent, in its CPU dry run: every step and flag works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "MASTER_PORT": "29541"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr + (tmp_path / "log.txt").read_text()
    for name in ("finetune.json", "finetune-ddp.json"):
        run = json.loads((tmp_path / name).read_text())
        assert run["status"] == "completed" and run["device"] == "cpu"
    assert json.loads((tmp_path / "finetune-ddp.json").read_text())["world_size"] == 1
    report = (tmp_path / "report.md").read_text()
    for pair in ("resnet26 + r50-max", "resnet26 + r50-hybrid", "mobilenetv2_050 + maxpool",
                 "mobilenetv2_050 + dw-hybrid", "efficientnet_lite0 + maxpool", "efficientnet_lite0 + dw-hybrid",
                 "convnext_atto + maxpool"):
        assert f"## {pair}\n" in report
    for batch in (1, 2):  # every pair timed at both batch sizes
        assert report.count(f"| PyTorch CPU eager (naive) | {batch} |") == 7
