"""Deploying where CPU users deploy: OpenVINO fp32 / int8 (NNCF) and ONNX Runtime int8 (static QDQ), checked against
PyTorch; the new backends in report, plan and eval; the one-line error when OpenVINO is not installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from conftest import FASHION_MNIST
from helpers import run_cli

import pfconvert
from pfconvert.data.config import resolve_data_config
from pfconvert.deploy.openvino import export_openvino, top1_agreement
from pfconvert.deploy.quantize import Calibration, synthetic_calibration
from pfconvert.deploy.runtime import Deployed, deploy
from pfconvert.errors import ExportError

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return timm.create_model("resnet18", num_classes=10).eval()


@pytest.fixture(scope="module")
def images(resnet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Fashion-MNIST images prepared as the model is fed: 32 training images (calibration), 48 validation ones."""
    from pfconvert.data.calibration import calibration_images

    cfg = resolve_data_config(resnet, input_size=SIZE)
    train, source = calibration_images(FASHION_MNIST, cfg, 32)
    val, _ = calibration_images(FASHION_MNIST, cfg, 48, split="val")
    assert train.shape == (32, *SIZE) and "train" in source
    return {"train": train, "val": val}


@pytest.mark.slow
def test_openvino_fp32_export_matches_pytorch(resnet: torch.nn.Module, tmp_path: Path) -> None:
    import openvino as ov

    result = export_openvino(resnet, tmp_path / "m.xml", SIZE)
    assert result.xml.is_file() and result.bin.is_file() and not result.int8
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    x = torch.randn((3, *SIZE), generator=torch.Generator().manual_seed(5))  # read back, another input and batch
    got = ov.Core().compile_model(str(result.xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    with torch.no_grad():
        ref = resnet(x).numpy()
    assert np.abs(got - ref).max() < 1e-3
    with pytest.raises(ExportError, match="already exists"):
        export_openvino(resnet, tmp_path / "m.xml", SIZE)


@pytest.mark.slow
def test_openvino_int8_export_agrees_with_pytorch_on_most_images(resnet: torch.nn.Module, images: dict,
                                                                 tmp_path: Path) -> None:
    calibration = Calibration.from_tensor(images["train"], "32 Fashion-MNIST training images")
    result = export_openvino(resnet, tmp_path / "q.xml", SIZE, int8=True, calibration=calibration,
                             check_inputs=images["val"], check_source="48 validation images", min_agreement=0.8)
    assert result.int8 and result.check_images == 48 and result.agreement is not None and result.agreement >= 0.8
    import openvino as ov

    got = ov.Core().compile_model(str(result.xml), "CPU")(images["val"].numpy())[0]  # the file, read back
    with torch.no_grad():
        ref = resnet(images["val"]).numpy()
    assert abs(float(np.mean(got.argmax(1) == ref.argmax(1))) - result.agreement) < 0.05
    assert result.bin.stat().st_size < 0.5 * 11_000_000 * 4  # int8 weights: well under the fp32 size
    xml = result.xml.read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml or "u8" in xml or "i8" in xml
    with pytest.raises(ExportError, match="below --min-agreement"):  # the check can fail
        export_openvino(resnet, tmp_path / "q2.xml", SIZE, int8=True, calibration=calibration,
                        check_inputs=images["val"], min_agreement=1.01)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["ov", "ort", "ov-int8", "ort-int8"])
def test_deployed_runtimes_compute_what_pytorch_computes(resnet: torch.nn.Module, images: dict, runtime: str) -> None:
    calibration = Calibration.from_tensor(images["train"], "calibration")
    deployed = deploy(resnet, runtime, SIZE, calibration, threads=1)
    assert isinstance(deployed, Deployed) and deployed.label
    x = images["val"]
    with torch.no_grad():
        ref, got = resnet(x).numpy(), deployed(x).numpy()
    assert got.shape == ref.shape
    if runtime.endswith("int8"):
        assert top1_agreement(ref, got) >= 0.8
        assert np.abs(got - ref).max() > 1e-6  # quantized: not the fp32 model
    else:
        assert np.abs(got - ref).max() < 1e-3


@pytest.mark.parametrize("runtime, pinned", [("ov", True), ("ov-int8", False)])
def test_fp32_stays_fp32_and_int8_runs_at_openvinos_default_precision(resnet: torch.nn.Module, runtime: str,
                                                                       pinned: bool, monkeypatch) -> None:
    """An fp32 model is pinned to f32 (OpenVINO would run it in bf16 on a CPU with AMX); an int8 model's float layers
    run at OpenVINO's own default, as a user's ``compile_model(model, "CPU")`` runs them (bf16 with AMX)."""
    from pfconvert.deploy import openvino
    from pfconvert.deploy.runtime import build_runtime

    asked: list[Any] = []
    compile_ = openvino.compile_openvino
    monkeypatch.setattr(openvino, "compile_openvino",
                        lambda *a, **k: asked.append(k.get("precision")) or compile_(*a, **k))
    model = build_runtime(resnet, runtime, SIZE, synthetic_calibration(SIZE, 8))
    model.runner(threads=1, batch_size=1)(np.zeros((1, *SIZE), np.float32))
    assert asked == (["f32"] if pinned else [None])
    compiled = compile_(model.payload, threads=1, batch_size=1, precision=asked[0])
    expected = "f32" if pinned else openvino.default_precision()  # bf16 on a CPU with AMX, f32 on most others
    assert {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}[expected] in str(
        compiled.get_property("INFERENCE_PRECISION_HINT"))


@pytest.mark.slow
def test_report_times_the_new_backends_and_names_the_deployed_one() -> None:
    original = timm.create_model("test_efficientnet", num_classes=10).eval()
    converted, _ = pfconvert.convert(original, "maxpool", input_size=(3, 32, 32))
    report = pfconvert.run_report(original, converted, input_size=(3, 32, 32), batch_sizes=(1, 2),
                                  backends=["ov", "ov-int8", "ort-int8"], runs=3, warmup=1, max_seconds=1.0,
                                  memory=False, threads=1)
    labels = {(r.backend, r.batch_size): r.backend_label for r in report.latency}
    assert labels[("ov-int8", 2)] == "OpenVINO CPU int8 (NNCF PTQ)" and ("ort-int8", 1) in labels
    assert any("random inputs" in n and "accuracy is unknown" in n for n in report.notes)
    deployed = report.deployed()
    assert [r.batch_size for r in deployed] == [1, 2]
    for row in deployed:  # the backend where the original is fastest, named in the headline
        assert row.original_ms == min(r.original_ms for r in report.latency if r.batch_size == row.batch_size)
    assert "Deployed, batch 1:" in report.to_markdown() and json.loads(report.to_json())["deployed"]


@pytest.mark.slow
def test_eval_reports_fp32_and_int8_side_by_side(ft_artifact: Path, ft_fmnist_dir: Path, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["eval", str(ft_artifact), "--data", str(ft_fmnist_dir), "--input-size", "32", "--limit",
                              "32", "--workers", "0", "--original", "--backend", "ov-int8,ort-int8",
                              "--calib-images", "16", "--json"], capsys, monkeypatch)
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert set(metrics) == {"student", "student on OpenVINO CPU int8 (NNCF PTQ)",
                            "student on ONNX Runtime CPU int8 (static QDQ)", "original",
                            "original on OpenVINO CPU int8 (NNCF PTQ)",
                            "original on ONNX Runtime CPU int8 (static QDQ)"}
    assert all(m["count"] == 32 for m in metrics.values())
    assert "int8 calibrated on 16 images of train" in err


@pytest.mark.slow
def test_accuracy_controlled_int8_stays_within_its_drop(resnet: torch.nn.Module, images: dict) -> None:
    """``max_drop``: NNCF puts layers back in fp32 until the int8 top-1 on the labelled images is within the drop
    (here 0 points: it may keep every layer fp32, but it may not end below fp32)."""
    from pfconvert.data.calibration import labelled_images
    from pfconvert.deploy.openvino import compile_openvino, fp32_weighted_layers, quantize_openvino, to_openvino
    from pfconvert.deploy.quantize import Validation

    cfg = resolve_data_config(resnet, input_size=SIZE)
    x, y, source = labelled_images(FASHION_MNIST, cfg, 48)
    assert x.shape == (48, *SIZE) and y.shape == (48,) and "val" in source
    validation = Validation.from_tensors(x, y, source)
    calibration = Calibration.from_tensor(images["train"], "calibration")
    controlled = quantize_openvino(to_openvino(resnet, SIZE), calibration, SIZE, max_drop=0.0, validation=validation)
    plain = quantize_openvino(to_openvino(resnet, SIZE), calibration, SIZE)

    def top1(ov_model: Any) -> float:
        logits = compile_openvino(ov_model)(x.numpy())[0]
        return float((logits.argmax(1) == y.numpy()).mean() * 100)

    with torch.no_grad():
        fp32 = float((resnet(x).argmax(1) == y).float().mean() * 100)
    assert top1(controlled) >= fp32 - 1e-6
    assert len(fp32_weighted_layers(plain)) == 2  # the stem and the classifier, by rule
    # the control starts from the plain model: with a bound nothing can miss, it keeps exactly the edges in fp32;
    # with keep_fp32=False it starts from every layer in int8
    loose = quantize_openvino(to_openvino(resnet, SIZE), calibration, SIZE, max_drop=100.0, validation=validation)
    assert fp32_weighted_layers(loose) == fp32_weighted_layers(plain)
    free = quantize_openvino(to_openvino(resnet, SIZE), calibration, SIZE, False, max_drop=100.0,
                             validation=validation)
    assert fp32_weighted_layers(free) == []
    with pytest.raises(ExportError, match="--int8-max-drop"):
        quantize_openvino(to_openvino(resnet, SIZE), calibration, SIZE, max_drop=0.5)


@pytest.mark.slow
def test_eval_int8_max_drop_labels_the_controlled_row(ft_artifact: Path, ft_fmnist_dir: Path, capsys,
                                                      monkeypatch) -> None:
    code, out, err = run_cli(["eval", str(ft_artifact), "--data", str(ft_fmnist_dir), "--input-size", "32", "--limit",
                              "32", "--workers", "0", "--backend", "ov-int8,ort-int8", "--calib-images", "16",
                              "--int8-max-drop", "1", "--control-images", "24", "--json"], capsys, monkeypatch)
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert set(metrics) == {"student", "student on OpenVINO CPU int8 (NNCF PTQ), accuracy-controlled to 1",
                            "student on ONNX Runtime CPU int8 (static QDQ)"}
    assert "at most 1 top-1 points below fp32 on 24 images of" in err and "weighted layer(s) in fp32" in err
    assert "ort-int8: ONNX Runtime has no accuracy-aware quantization" in err


@pytest.mark.slow
def test_export_int8_max_drop_writes_a_controlled_ir(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    target = tmp_path / "controlled.xml"
    code, out, err = run_cli(["export", str(ft_artifact), "--format", "openvino", "--int8", "--data",
                              str(ft_fmnist_dir), "--calib-images", "16", "--check-images", "16", "--control-images",
                              "16", "--int8-max-drop", "1", "--min-agreement", "0", "--out", str(target), "--json"],
                             capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["int8"] and result["int8_max_drop"] == 1.0 and isinstance(result["fp32_layers"], list)
    assert result["check_images"] == 16 and "16 of the" in result["check_source"] and target.is_file()
    assert "at most 1 top-1 points below fp32 on 16 other images" in err and "weighted layer(s) in fp32" in err


@pytest.mark.parametrize("argv", [["eval", "{artifact}", "--data", "fashion-mnist", "--backend", "ort-int8",
                                   "--int8-max-drop", "0.5"],
                                  ["export", "{artifact}", "--format", "openvino", "--int8", "--int8-max-drop", "0.5"],
                                  ["export", "{artifact}", "--format", "onnx", "--int8-max-drop", "0.5"]])
def test_int8_max_drop_without_what_it_needs_is_a_one_line_error(argv: list[str], ft_artifact: Path, capsys,
                                                                 monkeypatch) -> None:
    code, out, err = run_cli([a.replace("{artifact}", str(ft_artifact)) for a in argv], capsys, monkeypatch)
    assert code == 1 and out == "" and "--int8-max-drop" in err and len(err.strip().splitlines()) == 1, err


def test_eval_refuses_an_unknown_runtime_in_one_line(ft_artifact: Path, capsys, monkeypatch) -> None:
    code, _, err = run_cli(["eval", str(ft_artifact), "--data", "fashion-mnist", "--backend", "tensorrt"], capsys,
                           monkeypatch)
    assert code == 1 and "--backend 'tensorrt'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_plan_scores_int8_candidates_in_int8() -> None:
    from pfconvert.study.plan import _scorer

    seen: list[torch.nn.Module] = []

    class Tools:
        def top1(self, m: torch.nn.Module) -> float:
            seen.append(m)
            return 50.0

        def calib_batches(self, n: int) -> list[torch.Tensor]:
            return [torch.randn(n, 3, 32, 32)]

    model = timm.create_model("test_efficientnet", num_classes=10).eval()
    notes: list[str] = []
    score, calibration = _scorer("cpu", Tools(), (3, 32, 32), 8, "data", notes)
    assert calibration is None and score(model) == 50.0 and seen[-1] is model  # fp32: scored in PyTorch
    score, calibration = _scorer("ov-int8", Tools(), (3, 32, 32), 8, "data", notes)
    assert len(calibration) == 8 and "scored in int8 on ov-int8" in notes[-1]
    assert score(model) == 50.0
    assert isinstance(seen[-1], Deployed) and seen[-1].prepared.runtime == "ov-int8"


@pytest.mark.slow
def test_report_int8_max_drop_times_the_model_it_evaluated(ft_artifact: Path, ft_fmnist_dir: Path, capsys,
                                                             monkeypatch) -> None:
    """``report --data --int8-max-drop``: each model is quantized once (accuracy-controlled), its top-1 is measured
    and that same model is timed; the rows and the notes say it was controlled."""
    import pfconvert.deploy.openvino as ov_mod

    calls: list[float | None] = []
    quantize = ov_mod.quantize_openvino

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("max_drop"))
        return quantize(*args, **kwargs)

    monkeypatch.setattr(ov_mod, "quantize_openvino", counted)
    code, out, err = run_cli(["report", str(ft_artifact), "--backends", "ov-int8", "--data", str(ft_fmnist_dir),
                              "--input-size", "32", "--batch-sizes", "1", "--runs", "2", "--warmup", "1",
                              "--max-seconds", "1", "--no-memory", "--calib-images", "16", "--eval-images", "32",
                              "--int8-max-drop", "1", "--control-images", "24", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert calls == [1.0, 1.0]  # the original and the converted model, once each: evaluated and timed
    report = json.loads(out)
    label = "OpenVINO CPU int8 (NNCF PTQ), accuracy-controlled to 1"
    assert set(report["accuracy"][label]) == {"original", "converted"}
    assert any(n.startswith(f"{label}: the model timed is the one whose top-1 is shown") for n in report["notes"])
    assert [r["backend"] for r in report["latency"]] == ["ov-int8"]
    assert "at most 1 top-1 points below fp32 on 24 images of" in err


@pytest.mark.parametrize("argv", [["report", "{artifact}", "--int8-max-drop", "0.5", "--backends", "ov-int8"],
                                  ["report", "{artifact}", "--int8-max-drop", "0.5", "--backends", "ort",
                                   "--data", "fashion-mnist"]])
def test_report_int8_max_drop_needs_data_and_the_ov_int8_backend(argv: list[str], ft_artifact: Path, capsys,
                                                                 monkeypatch) -> None:
    code, out, err = run_cli([a.replace("{artifact}", str(ft_artifact)) for a in argv], capsys, monkeypatch)
    assert code == 1 and out == "" and "--int8-max-drop" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [["export", "{artifact}", "--format", "openvino"],
                                  ["report", "{artifact}", "--backends", "ov-int8"],
                                  ["eval", "{artifact}", "--data", "fashion-mnist", "--backend", "ov"],
                                  ["plan", "test_efficientnet", "--data", "fashion-mnist", "--backend", "ov"]])
def test_missing_openvino_is_a_one_line_error_naming_the_extra(argv: list[str], ft_artifact: Path, capsys,
                                                               monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError, as when not installed
    monkeypatch.setitem(sys.modules, "nncf", None)
    code, out, err = run_cli([a.replace("{artifact}", str(ft_artifact)) for a in argv], capsys, monkeypatch)
    assert code == 1 and out == ""
    assert "pip install 'pfconvert[openvino]'" in err and len(err.strip().splitlines()) == 1, err


def test_synthetic_calibration_says_the_accuracy_is_unknown() -> None:
    calibration = synthetic_calibration((3, 8, 8), 4)
    assert calibration.synthetic and calibration.inputs.shape == (4, 3, 8, 8)
    assert "accuracy is unknown" in calibration.describe()


def test_edge_layers_are_the_first_and_last_weighted_nodes() -> None:
    from pfconvert.deploy.quantize import edge_layers

    nodes = [("in", "Relu"), ("stem", "Conv"), ("b1", "Conv"), ("pool", "MaxPool"), ("fc", "Gemm"), ("out", "Softmax")]
    assert edge_layers(nodes, ("Conv", "Gemm")) == ["stem", "fc"]
    assert edge_layers([("only", "Conv")], ("Conv",)) == ["only"]
    assert edge_layers([("pool", "MaxPool")], ("Conv",)) == []


def test_pools_after_the_fp32_stem_stay_fp32_with_their_readers() -> None:
    from pfconvert.deploy.quantize import fp32_followers

    # a ResNet stem: conv -> relu -> max-pool -> (conv1, downsample); a later pool is not touched
    nodes = [("stem", "Conv", ["x"], ["s"]), ("relu", "Relu", ["s"], ["r"]), ("pool", "MaxPool", ["r"], ["p"]),
             ("conv1", "Conv", ["p"], ["c"]), ("down", "Conv", ["p"], ["d"]), ("add", "Add", ["c", "d"], ["a"]),
             ("pool2", "MaxPool", ["a"], ["q"]), ("fc", "Gemm", ["q"], ["y"])]
    assert fp32_followers(nodes, ["stem", "fc"]) == ["pool", "conv1", "down"]
    assert fp32_followers(nodes, []) == []
    no_pool = [("stem", "Conv", ["x"], ["s"]), ("clip", "Clip", ["s"], ["r"]), ("dw", "Conv", ["r"], ["d"])]
    assert fp32_followers(no_pool, ["stem"]) == []


@pytest.mark.slow
def test_ort_int8_runs_pools_that_read_no_conv_in_fp32(tmp_path: Path) -> None:
    """A max-pool reading a residual add: left alone, ONNX Runtime folds it into its slow generic NCHW int8 pool; with
    :func:`unfold_int8_pools` its output gets a scale of its own and it runs in fp32 between DequantizeLinear and
    QuantizeLinear. A pool reading a quantized conv is left to the NHWC int8 kernel."""
    import onnx
    import onnxruntime as ort

    from pfconvert.deploy.onnx import export_onnx_bytes
    from pfconvert.deploy.quantize import quantize_ort

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a, self.b = (torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1),
                                         torch.nn.Conv2d(8, 8, 1))
            self.pool = torch.nn.MaxPool2d(3, 1, 1)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            x = x + torch.relu(self.a(x))
            x = self.pool(x)  # reads the add
            x = self.pool(torch.relu(self.b(x)))  # reads a quantized conv
            return self.head(x.mean((2, 3)))

    model = Net().eval()
    data = quantize_ort(export_onnx_bytes(model, (3, 16, 16)), synthetic_calibration((3, 16, 16), 8))
    graph = onnx.load_model_from_string(data).graph
    producer = {out: node for node in graph.node for out in node.output}
    readers = {t: node for node in graph.node for t in node.input}
    pools = [n for n in graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 2
    scale_in = [producer[producer[p.input[0]].input[0]].input[1] for p in pools]  # DQ <- Q: the input's scale
    scale_out = [readers[p.output[0]].input[1] for p in pools]
    assert scale_in[0] != scale_out[0] and scale_out[0].endswith("_own_scale")
    assert not scale_out[1].endswith("_own_scale")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0] - ref).max() < 0.1 * np.abs(ref).max()
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph
    made = {out: node.op_type for node in optimized.node for out in node.output}
    nchw_pools = [n for n in optimized.node if n.op_type == "MaxPool"]
    assert nchw_pools and all(made.get(n.input[0]) == "DequantizeLinear" for n in nchw_pools)  # fp32, not int8


def test_cpu_has_vnni_reads_the_cpu_flags(monkeypatch) -> None:
    import platform

    from pfconvert.deploy import quantize

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for flags, expected in [("fpu avx2 avx512f avx512_vnni", True), ("fpu avx2 avx_vnni", True), ("fpu avx2", False)]:
        monkeypatch.setattr(quantize.Path, "read_text", lambda self, flags=flags: f"flags\t\t: {flags}\n")
        assert quantize.cpu_has_vnni() is expected
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert quantize.cpu_has_vnni()


@pytest.mark.slow
def test_int8_keeps_the_stem_and_the_classifier_in_fp32(resnet: torch.nn.Module, images: dict) -> None:
    import onnx

    from pfconvert.deploy.openvino import fp32_weighted_layers
    from pfconvert.deploy.runtime import build_runtime

    calibration = Calibration.from_tensor(images["train"], "calibration")
    graph = onnx.load_model_from_string(build_runtime(resnet, "ort-int8", SIZE, calibration).payload).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    fp32 = {n.name for n in weighted if n.input[1] not in dequantized}
    # the stem, the classifier, and (ONNX Runtime only) the two convs reading the stem's max-pool
    assert fp32 == {"/conv1/Conv", "/fc/Gemm", "/layer1/layer1.0/conv1/Conv"} and len(weighted) > 10, fp32
    pools = [n for n in graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1 and not any(i in dequantized for i in pools[0].input)  # the stem's pool reads fp32

    ov_model = build_runtime(resnet, "ov-int8", SIZE, calibration).payload
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution",
                                                                                                     "MatMul")]
    assert fp32_weighted_layers(ov_model) == [names[0], names[-1]] and len(names) > 10
