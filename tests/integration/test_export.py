"""ONNX export: numerically checked against PyTorch, never overwrites, one-line errors from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from helpers import run_cli

from pfconvert.deploy.onnx import ExportError, check_onnx, export_onnx, export_onnx_bytes

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return timm.create_model("test_efficientnet", num_classes=10).eval()


_cli = run_cli


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_onnx_is_checked(small: torch.nn.Module, tmp_path: Path, exporter: str) -> None:
    out = tmp_path / "m.onnx"
    result = export_onnx(small, out, SIZE, exporter=exporter, dynamic_batch=True)
    assert out.is_file() and result.size_bytes == out.stat().st_size > 0
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert result.exporter == exporter
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_export_refuses_to_overwrite(small: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(small, out, SIZE, exporter="torchscript")
    assert out.read_bytes() == b"keep me"
    export_onnx(small, out, SIZE, exporter="torchscript", overwrite=True)
    assert out.stat().st_size > 1000


@pytest.mark.slow
def test_export_fails_loudly_when_outputs_differ(small: torch.nn.Module, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pfconvert.deploy.onnx.check_onnx", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match="differs from PyTorch by 0.5"):
        export_onnx(small, tmp_path / "m.onnx", SIZE, exporter="torchscript", tolerance=1e-3)


@pytest.mark.slow
def test_dynamic_batch_bytes_run_at_other_batch_sizes(small: torch.nn.Module) -> None:
    data = export_onnx_bytes(small, SIZE, dynamic_batch=True, exporter="auto")
    assert check_onnx(small, data, SIZE, batch_size=3) < 1e-3


@pytest.mark.slow
def test_cli_export_artifact(ft_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "te.onnx"
    code, out, err = _cli(["export", str(ft_artifact), "--format", "onnx", "--out", str(target), "--json",
                           "--exporter", "torchscript"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["path"] == str(target) and data["max_abs_diff"] < 1e-3 and target.is_file()
    code, out, err = _cli(["export", str(ft_artifact), "--out", str(target)], capsys, monkeypatch)
    assert code == 1 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    code, out, err = _cli(["export", str(ft_artifact), "--format", "tflite", "--out", str(tmp_path / "x")],
                          capsys, monkeypatch)
    assert code == 1 and "not supported" in err
