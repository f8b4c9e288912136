"""The command line: tables on stdout, one-line errors with non-zero exit codes, nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

run = run_cli


def test_rules_lists_builtins(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["rules"], capsys, monkeypatch)
    assert code == 0 and "r50-hybrid" in out and "maxpool" in out
    code, out, _ = run(["rules", "r50-max"], capsys, monkeypatch)
    assert code == 0 and out.startswith("name: r50-max")


@pytest.mark.slow
def test_convert_writes_artifact_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "a"
    code, out, err = run(["convert", "mobilenetv2_050", "--rule", "maxpool", "--num-classes", "10",
                          "--input-size", "3,64,64", "--out", str(out_dir)], capsys, monkeypatch)
    assert code == 0, err
    assert "params" in out and "MACs" in out and "replaced by 'depthwise-to-maxpool'" in out and "17" in out
    assert (out_dir / "recipe.json").is_file() and (out_dir / "model.safetensors").is_file()
    code, out, err = run(["convert", "mobilenetv2_050", "--out", str(out_dir)], capsys, monkeypatch)
    assert code == 1 and "already exists" in err and "Traceback" not in err


@pytest.mark.slow
def test_convert_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["convert", "resnet18", "--rule", "maxpool", "--allow-empty", "--input-size", "3,32,32",
                          "--out", str(tmp_path / "r"), "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["replaced"] == [] and data["params"][0] == data["params"][1]


@pytest.mark.slow
def test_inspect_is_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["inspect", "resnet50", "--rule", "r50-hybrid", "--json"], capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 16 and rows[3]["layer"] == "layer2.0.conv2"
    assert rows[3]["becomes"] == "AvgPool2d 2x2 s2 p0 -> Conv2d 128->128 k3 s1" and rows[3]["absorbs"] == []
    assert rows[0]["becomes"] == "MaxPool2d 3x3 s1 p1" and rows[0]["absorbs"] == ["layer1.0.bn2", "layer1.0.act2"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "mobilenetv2_10"], "unknown timm model 'mobilenetv2_10'; did you mean"),
        (["convert", "mobilenetv2_050", "--rule", "nope"], "unknown rule 'nope'"),
        (["inspect", "resnet18", "--rule", "maxpool"], "matched no layer of resnet18"),
        (["convert", "resnet18", "--checkpoint", "missing.pth"], "checkpoint not found"),
        (["convert", "resnet18", "--input-size", "3x"], "expected N (height = width) such as 224, or C,H,W"),
        (["convert", "resnet18", "--kwarg", "oops"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_on_stderr(argv: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys, monkeypatch)
    assert code == 1
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("Error:")  # after the model and input header lines, if any


def test_bad_rule_file_names_file_rule_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rule = tmp_path / "bad.yaml"
    rule.write_text("name: b\nrules:\n  - name: r1\n    match: {depthwise: true}\n    replace: {op: max_pool, "
                    "kernel_size: -2}\n")
    code, _, err = run(["inspect", "mobilenetv2_050", "--rule", str(rule)], capsys, monkeypatch)
    assert code == 1 and "bad.yaml: rule 'r1' (rules[0]), field 'replace.kernel_size'" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(["convert"], capsys, monkeypatch)
    assert code == 2 and "Missing argument" in err


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_input_size_n_is_n_by_n_at_the_model_channels(command: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--input-size 32` is `--input-size C,32,32` with the model's C (here 1, from --in-chans)."""
    monkeypatch.chdir(tmp_path)
    runs = []
    for size in ("32", "1,32,32"):
        out_dir = ["--out", f"a{len(runs)}"] if command == "convert" else []
        code, out, err = run([command, "test_efficientnet", "--in-chans", "1", "--num-classes", "10",
                              "--input-size", size, *out_dir, "--json"], capsys, monkeypatch)
        assert code == 0 and "input: 1x32x32," in err, err
        runs.append(json.loads(out))
    if command == "convert":
        assert runs[0]["input_size"] == [1, 32, 32] and runs[0]["data_config"] == runs[1]["data_config"]
        runs = [{k: v for k, v in r.items() if k != "out"} for r in runs]
    assert runs[0] == runs[1]
