"""run_report / render_report / plot on small models, and `pfconvert report` end to end (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from helpers import run_cli
from rich.console import Console

from pfconvert.cli._report_render import render_report
from pfconvert.report.backends import list_backends
from pfconvert.report.latency import LatencyConfig, measure
from pfconvert.report.memory import peak_memory_cpu
from pfconvert.report.plot import plot_report
from pfconvert.report.report import FASTER, SAME, SLOWER, Report
from pfconvert.report.run import run_report

SIZE = (3, 64, 64)
FAST = {"runs": 3, "warmup": 1, "batch_sizes": (1, 2), "input_size": SIZE}


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    import pfconvert

    original = timm.create_model("test_efficientnet", num_classes=10).eval()
    converted, _ = pfconvert.convert(original, "maxpool", input_size=SIZE)
    return original, converted.eval()


@pytest.fixture(scope="module")
def report(pair: tuple[torch.nn.Module, torch.nn.Module]) -> Report:
    original, converted = pair
    return run_report(original, converted, names=("te", "te+maxpool"), backends=["cpu", "cpu-eager", "ort"],
                      deploy_method="jit", accuracies=(None, None), **FAST)


def test_backends_registry_lists_cpu_ones() -> None:
    names = list_backends()
    assert names[:3] == ["cpu", "cpu-eager", "ort"]
    assert ("cuda" in names) == torch.cuda.is_available()


def test_measure_interleaves_and_returns_every_cell(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    config = LatencyConfig(threads=1, **FAST)
    out = measure({"a": pair[0], "b": pair[1]}, ["cpu-eager"], config)
    assert set(out) == {("cpu-eager", 1), ("cpu-eager", 2)}
    assert all(len(t["a"]) == len(t["b"]) == 3 and min(t["a"]) > 0 for t in out.values())


@pytest.mark.slow
def test_report_structure(report: Report, pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    data = json.loads(report.to_json())
    assert data["original"]["params"] > data["converted"]["params"] > 0
    assert data["original"]["macs"] > data["converted"]["macs"] > 0
    assert data["converted"]["pool_ops"] > data["original"]["pool_ops"]
    assert set(data["original"]["peak_memory"]) == {"1", "2"}
    assert "fvcore" in data["convention"] and "pool" in data["convention"]
    cells = {(r["backend"], r["batch_size"]) for r in data["latency"]}
    assert cells == {(b, n) for b in ("cpu", "cpu-eager", "ort") for n in (1, 2)}
    labels = {r["backend"]: r["backend_label"] for r in data["latency"]}
    assert labels["cpu"] == "PyTorch CPU deployed (jit)"
    for row in data["latency"]:
        assert row["verdict"] in (FASTER, SLOWER, SAME)
        assert row["speedup"] == pytest.approx(row["original_ms"] / row["converted_ms"])
    assert data["machine"]["cpu"] and data["threads"] >= 1


@pytest.mark.slow
def test_render_and_markdown(report: Report) -> None:
    console = Console(record=True, width=160)
    console.print(render_report(report))
    text = console.export_text()
    assert "params" in text and "speed-up" in text and "PyTorch CPU deployed (jit)" in text
    md = report.to_markdown()
    assert md.count("| PyTorch CPU eager (naive) |") == 2


@pytest.mark.slow
def test_plot_written_with_and_without_accuracy(report: Report, tmp_path: Path) -> None:
    bars = plot_report(report, tmp_path / "bars.png")
    assert bars.stat().st_size > 5000 and bars.read_bytes()[:4] == b"\x89PNG"
    report.original.accuracy, report.converted.accuracy = 76.2, 74.3
    try:
        scatter = plot_report(report, tmp_path / "acc.png")
    finally:
        report.original.accuracy = report.converted.accuracy = None
    assert scatter.stat().st_size > 5000


def test_peak_memory_grows_with_batch(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    one, four = peak_memory_cpu(pair[0], 1, SIZE), peak_memory_cpu(pair[0], 4, SIZE)
    assert 0 < one < four


_cli = run_cli


QUICK = ["--batch-sizes", "1", "--runs", "3", "--warmup", "1", "--backends", "cpu-eager", "--threads", "1"]


@pytest.mark.slow
def test_cli_report_artifact_alone_json(ft_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plot = tmp_path / "p.png"
    code, out, err = _cli(["report", str(ft_artifact), *QUICK, "--json", "--plot", str(plot)], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)  # stdout is pure JSON; diagnostics went to stderr
    assert data["original"]["name"] == "test_efficientnet"
    assert data["converted"]["name"] == "test_efficientnet+maxpool"
    assert data["original"]["params"] > data["converted"]["params"]
    assert [r["backend"] for r in data["latency"]] == ["cpu-eager"]
    assert plot.stat().st_size > 0


@pytest.mark.slow
def test_cli_report_model_with_rule_markdown(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _cli(["report", "resnet26", "--rule", "r50-max", "--num-classes", "10", "--input-size",
                           "3,64,64", "--no-memory", *QUICK, "--markdown"], capsys, monkeypatch)
    assert code == 0, err
    assert out.startswith("**resnet26** vs **resnet26+r50-max**")
    assert "| PyTorch CPU eager (naive) | 1 |" in out


def test_cli_report_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _cli(["report", "resnet18", *QUICK], capsys, monkeypatch)
    assert code == 1 and "--rule" in err and "Traceback" not in err
    code, _, err = _cli(["report", "resnet18", "--rule", "maxpool", "--backends", "tpu", "--batch-sizes", "1"],
                        capsys, monkeypatch)
    assert code == 1 and "unknown backend 'tpu'" in err
    code, _, err = _cli(["report", "resnet18", "--rule", "maxpool", "--batch-sizes", "1,x"], capsys, monkeypatch)
    assert code == 1 and "--batch-sizes" in err
