"""Scale-out: ``torchrun --nproc_per_node 2`` (gloo on CPU) gives a result of the same shape as one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pfconvert
import pfconvert.cli.finetune  # noqa: F401  (registers `finetune`)
from pfconvert.cli.app import main
from pfconvert.recover.finetune.checkpoint import load_checkpoint

ARGS = ["--epochs", "1", "--input-size", "32", "--batch-size", "16", "--limit-train", "128", "--limit-val", "48",
        "--workers", "0", "--bn-recalib-images", "32", "--quiet", "--json"]

pytestmark = pytest.mark.slow  # trains or runs processes: all of it is in the full run only


def _shape(value: Any) -> Any:
    """The nested keys of a JSON value (what must not depend on the number of processes)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__ if value is not None else None


def test_two_processes_with_gloo_match_one_process(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    single_dir, multi_dir = (Path(shutil.copytree(ft_artifact, tmp_path / name)) for name in ("one", "two"))
    args = ["--data", str(ft_fmnist_dir), *ARGS]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pfconvert", "finetune", str(multi_dir), *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    multi = json.loads(launched.stdout)  # rank 0 alone prints the summary
    monkeypatch.setattr(sys, "argv", ["pfconvert", "finetune", str(single_dir), *args])
    main()
    single = json.loads(capsys.readouterr().out)

    # the best record is an epoch's or the start's (whichever scored higher), so its fields may differ between the two
    assert _shape({**multi, "best": None}) == _shape({**single, "best": None})
    assert (multi["world_size"], single["world_size"]) == (2, 1) and multi["status"] == single["status"] == "completed"
    assert multi["total_steps"] == 4 and single["total_steps"] == 8  # 128 images: 16 per step and per process
    assert multi["best"]["val_count"] == single["best"]["val_count"] == 48  # each image validated once in total
    assert multi["start"]["teacher"] == single["start"]["teacher"]  # the same (untrained) teacher, all-reduced
    state = load_checkpoint(multi_dir / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # every rank's RNG, for an exact resume
    assert sorted(p.name for p in (multi_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt", "start.pt"]
    assert len(load_checkpoint(multi_dir / "checkpoints" / "start.pt")["rng"]) == 2  # a start every rank can resume
    pfconvert.load(multi_dir)  # the fine-tuned weights written by rank 0 load strictly
