"""benchmarks/peers.py (pfconvert against Torch-Pruning) on a tiny setting: the speed table has the original, each
conversion and its pruned peers, and the peers at equal MACs are within 2% of the conversion's MACs. Also: pruning
passes channels through a converted model's pools (the composition of point 3 of issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

tp = pytest.importorskip("torch_pruning")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peers.py"

pytestmark = pytest.mark.slow  # builds, prunes and times resnet26 several times (about a minute on 2 cores)


def test_peers_speed_table_matches_macs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "resnet26", "--size", "64", "--runs", "1",
                           "--warmup", "0", "--batch-sizes", "1", "--backends", "cpu-eager", "--skip-accuracy",
                           "--skip-latency-match", "--threads", "1", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    variants = ["original", "r50-max", "pruned@MACs(r50-max)", "r50-hybrid", "pruned@MACs(r50-hybrid)"]
    for variant in variants:
        assert f"| resnet26 | {variant} |" in proc.stdout
    rows = {r["variant"]: r for r in json.loads((tmp_path / "peers.json").read_text())["speed"]}
    assert list(rows) == variants
    for rule in ("r50-max", "r50-hybrid"):
        peer, conv = rows[f"pruned@MACs({rule})"], rows[rule]
        assert abs(peer["macs"] / conv["macs"] - 1) < 0.02
        assert 0 < peer["ratio"] < 0.9 and peer["params"] < rows["original"]["params"]
        assert set(peer["latency"]) == {"PyTorch CPU eager (naive) bs1"}


def test_pruning_a_converted_model_keeps_the_pools_channels() -> None:
    import torch

    import pfconvert

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from peers import prune

    size = (3, 32, 32)
    converted, _ = pfconvert.convert("resnet26", "r50-max", input_size=size, num_classes=10)
    pruned = prune(converted, 0.25, size)
    for block in (pruned.layer1[0], pruned.layer4[1]):
        assert block.conv1.out_channels == block.conv3.in_channels < converted.get_submodule(
            "layer1.0.conv1" if block is pruned.layer1[0] else "layer4.1.conv1").out_channels
        assert isinstance(block.conv2, torch.nn.MaxPool2d)
    assert pruned(torch.randn(2, *size)).shape == (2, 10)
