"""benchmarks/peers.py (pfconvert against Torch-Pruning) on a tiny setting: the speed table has the original, each
conversion and its pruned peers, and the peers at equal MACs are within 2% of the conversion's MACs; the accuracy
path fine-tunes every student of the depthwise case (--quick, real Fashion-MNIST images) and tables them. Also: pruning
passes channels through a converted model's pools (the composition of point 3 of issue 14), and the latency match
refines a fit that misses (timing faked: a curve the fit's form does not follow, a step in the latency)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

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

    from benchmarks.peers import prune

    size = (3, 32, 32)
    converted, _ = pfconvert.convert("resnet26", "r50-max", input_size=size, num_classes=10)
    pruned = prune(converted, 0.25, size)
    for block in (pruned.layer1[0], pruned.layer4[1]):
        assert block.conv1.out_channels == block.conv3.in_channels < converted.get_submodule(
            "layer1.0.conv1" if block is pruned.layer1[0] else "layer4.1.conv1").out_channels
        assert isinstance(block.conv2, torch.nn.MaxPool2d)
    assert pruned(torch.randn(2, *size)).shape == (2, 10)


def test_peers_accuracy_tables_every_student_of_the_depthwise_case(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    import pfconvert
    from pfconvert.conversion import save_weights

    original = tmp_path / "mobilenetv2_050" / "original.safetensors"
    original.parent.mkdir()
    save_weights(pfconvert.create_model("mobilenetv2_050", num_classes=10), original)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--skip-speed", "--quick", "--accuracy-models",
                           "mobilenetv2_050", "--data", str(ft_fmnist_dir), "--threads", "1", "--match-runs-32", "3",
                           "--runs-32", "3", "--backends", "cpu-eager", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((tmp_path / "peers.json").read_text())["accuracy"]["mobilenetv2_050"]}
    assert list(rows) == ["original"] + [name for label in ("dw-hybrid", "maxpool-planned")
                                         for name in (label, f"pruned@latency({label})", f"pruned@MACs({label})")]
    for label in ("dw-hybrid", "maxpool-planned"):
        conv, peer = rows[label], rows[f"pruned@MACs({label})"]
        assert conv["kind"] == "pfconvert" and conv["macs"] < rows["original"]["macs"]
        assert abs(peer["macs"] / conv["macs"] - 1) < 0.02 and 0 < peer["ratio"] < 0.9
        assert 0 <= rows[f"pruned@latency({label})"]["ratio"] < 0.9
    for row in rows.values():
        assert 0.0 <= row["test_top1"] <= 100.0 and row["latency"]["PyTorch CPU eager (naive) bs1"] > 0
    assert "## Accuracy (Fashion-MNIST, mobilenetv2_050 at 64 px)" in proc.stdout
    assert "| pruned@MACs(maxpool-planned) | Torch-Pruning |" in proc.stdout


def _fake_timing(monkeypatch: pytest.MonkeyPatch, latency: Callable[[float], float]) -> None:
    """peers.prune returns the ratio itself, and peers.latency_ratios times each 'model' (a ratio) as ``latency``."""
    from benchmarks import peers

    monkeypatch.setattr(peers, "prune", lambda model, ratio, size: ratio)
    monkeypatch.setattr(peers, "latency_ratios", lambda candidates, target, config, backend="cpu": {
        key: latency(ratio) for key, ratio in candidates.items()})


def test_latency_match_refines_a_curve_the_fit_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timing(monkeypatch, lambda r: 2.0 * (1 - r) ** 4)  # matched at ratio 1 - 0.5 ** 0.25 = 0.159
    from benchmarks.peers import match_latency

    logs: list[str] = []
    ratio, _, rel = match_latency(None, None, (3, 32, 32), 0.2, None, log=logs.append)  # type: ignore[arg-type]
    assert abs(rel - 1) <= 0.03 and abs(ratio - (1 - 0.5 ** 0.25)) < 0.01
    assert rel == 2.0 * (1 - ratio) ** 4
    assert any("refined" in line for line in logs)


def test_latency_match_across_a_step_returns_the_closest_timed_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    # channel counts that jump the latency: 1.08x just below ratio 0.3, 0.78x from there, never 1
    def latency(r: float) -> float:
        return 1.8 * (1 - r) ** 2 + (0.2 if r < 0.3 else -0.1)

    _fake_timing(monkeypatch, latency)
    from benchmarks.peers import match_latency

    logs: list[str] = []
    ratio, _, rel = match_latency(None, None, (3, 32, 32), 0.25, None, log=logs.append)  # type: ignore[arg-type]
    grid = [0.05 + 0.4 * i / 5 for i in range(6)]
    assert rel == latency(ratio) and abs(rel - 1) <= min(abs(latency(r) - 1) for r in grid)
    assert abs(ratio - 0.3) < 0.02  # at the step
