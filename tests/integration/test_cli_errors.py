"""Hostile and careless input through the real command line: every case ends with a one-line ``Error:`` (or a usage
error) and a non-zero exit, never a traceback, and leaves what the user had untouched."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from PIL import Image
from safetensors.torch import load_file, save_file

import pfconvert
from pfconvert._files import LOCK_FILE, exclusive
from pfconvert.conversion.artifact import finetuned_metadata, save_weights

pytestmark = pytest.mark.slow  # each case loads models or data: the full run has them, `-m "not slow"` skips them

FT = ["--input-size", "32", "--workers", "0", "--batch-size", "16", "--epochs", "1", "--limit-train", "64",
      "--limit-val", "32", "--quiet"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but pfconvert's lock file) with the hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if p.name != LOCK_FILE and not p.is_symlink()}


@pytest.fixture()
def world(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """A user's folder: an artifact, data, a rule file, a file a link points at."""
    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    return {"root": tmp_path, "art": art, "data": ft_fmnist_dir, "victim": victim}


def _rule(root: Path, replace: str) -> str:
    path = root / "r.yaml"
    path.write_text(f"name: r\nrules:\n  - name: dw\n    match: {{depthwise: true}}\n    replace: {replace}\n")
    return str(path)


def _bomb(root: Path) -> str:
    folder = root / "bomb"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
            Image.new("L", (8, 8)).save(folder / split / cls / "ok.png")
    huge = folder / "train" / "a" / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 400M pixels: above PIL's limit, a few KB on disk
    return str(folder)


def _tamper_recipe(root: Path, art: Path, edit: Callable[[dict], object]) -> str:
    recipe = json.loads((art / "recipe.json").read_text())
    edit(recipe)
    (art / "recipe.json").write_text(json.dumps(recipe))
    return str(art)


CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("pool kernel larger than the feature map",
     lambda w: ["convert", "mobilenetv2_050", "--rule", _rule(w["root"], "{op: max_pool, kernel_size: 64}"),
                "--input-size", "3,32,32", "--out", str(w["root"] / "o")], r"fails on the layer's input"),
    ("kernel_size: 1e29", lambda w: ["inspect", "mobilenetv2_050", "--rule",
                                     _rule(w["root"], "{op: max_pool, kernel_size: 1e29}")],
     r"field 'replace.kernel_size': expected 'inherit' or an integer"),
    ("eff_max expand: 1e8", lambda w: ["inspect", "vit_tiny_patch16_224", "--rule", _write(
        w["root"] / "v.yaml", "name: v\nrules: [{name: a, match: {op: attention}, replace: {op: eff_max, expand: "
        "100000000}}]")], r"field 'replace.expand': Input should be less than or equal to 64"),
    ("shift groups: 1e20", lambda w: ["inspect", "mobilenetv2_050", "--rule",
                                      _rule(w["root"], "{op: shift, groups: 100000000000000000000}")],
     r"field 'replace.groups': Input should be less than or equal to 9"),
    ("a FIFO as the rule file", lambda w: ["inspect", "mobilenetv2_050", "--rule", _fifo(w["root"])],
     r"is not a regular file"),
    ("a non-UTF-8 rule file", lambda w: ["inspect", "mobilenetv2_050", "--rule", _write_bytes(
        w["root"] / "b.yaml", b"name: \xff\xfe\n")], r"is not UTF-8 text"),
    ("a decompression-bomb image (finetune)",
     lambda w: ["finetune", str(w["art"]), "--data", _bomb(w["root"]), *FT], r"too large to decode safely"),
    ("a decompression-bomb image (eval)",
     lambda w: ["eval", str(w["art"]), "--data", _bomb(w["root"]), "--split", "train"], r"too large to decode safely"),
    ("sensitivity --limit 0", lambda w: ["sensitivity", "resnet14t", "--data", str(w["data"]), "--limit", "0"],
     r"Invalid value for '--limit'"),
    ("sensitivity --bn-recalib-images -2",
     lambda w: ["sensitivity", "resnet14t", "--data", str(w["data"]), "--bn-recalib-images", "-2"],
     r"Invalid value for '--bn-recalib-images'"),
    ("sensitivity --batch-size 0", lambda w: ["sensitivity", "resnet14t", "--data", str(w["data"]), "--batch-size", "0"],
     r"Invalid value for '--batch-size'"),
    ("sensitivity --input-size 0",
     lambda w: ["sensitivity", "resnet14t", "--data", str(w["data"]), "--input-size", "0"],
     r"--input-size '0': at least 8 pixels a side"),
    ("export --overwrite --out DIR", lambda w: ["export", str(w["art"]), "--overwrite", "--out", str(w["root"])],
     r"is a directory"),
    ("recipe: non-UTF-8", lambda w: ["eval", _write_bytes(w["art"] / "recipe.json", b"{\xff}") and str(w["art"]),
                                     "--data", str(w["data"])], r"cannot read .*recipe.json"),
    ("recipe: model_kwargs a list", lambda w: ["export", _tamper_recipe(w["root"], w["art"],
                                                                        lambda r: r.update(model_kwargs=[1, 2]))],
     r"malformed recipe, field 'model_kwargs'"),
    ("recipe: a replaced entry with no path", lambda w: ["export", _tamper_recipe(
        w["root"], w["art"], lambda r: r["replaced"][0].pop("path"))], r"every entry needs a 'path'"),
    ("recipe: rule text edited (max_pool -> avg_pool)", lambda w: ["export", _tamper_recipe(
        w["root"], w["art"], lambda r: r.update(rule_text=r["rule_text"].replace("max_pool", "avg_pool")))],
     r"does not match its rule_sha256"),
    ("--kwarg checkpoint_path=...", lambda w: ["convert", "resnet18", "--kwarg", f"checkpoint_path={w['victim']}",
                                               "--out", str(w["root"] / "o")], r"'checkpoint_path' is pfconvert's to set"),
    ("--kwarg drop_rate=abc", lambda w: ["convert", "resnet18", "--kwarg", "drop_rate=abc", "--input-size", "3,32,32",
                                         "--out", str(w["root"] / "o")], r"any --kwarg values"),
    ("--num-classes 0", lambda w: ["convert", "resnet18", "--num-classes", "0"], r"Invalid value for '--num-classes'"),
    ("--num-classes -1", lambda w: ["convert", "resnet18", "--num-classes", "-1"], r"Invalid value for '--num-classes'"),
    ("sensitivity --limit -3",
     lambda w: ["sensitivity", "resnet14t", "--data", str(w["data"]), "--limit", "-3"],
     r"Invalid value for '--limit'"),
    ("report --max-seconds -1", lambda w: ["report", str(w["art"]), "--max-seconds", "-1"],
     r"Invalid value for '--max-seconds'"),
    ("export --tolerance -1", lambda w: ["export", str(w["art"]), "--tolerance", "-1"], r"Invalid value for '--tolerance'"),
    ("report --plot on an existing file", lambda w: ["report", str(w["art"]), "--plot", str(w["victim"])],
     r"not a .png file name"),
    ("report --plot on an existing .png", lambda w: ["report", str(w["art"]), "--plot", _write(
        w["root"] / "mine.png", "png")], r"already exists; choose another path or pass --overwrite"),
    ("report --plot a folder", lambda w: ["report", str(w["art"]), "--plot", str(w["root"])], r"is a directory"),
    ("finetune --lr inf", lambda w: ["finetune", str(w["art"]), "--data", str(w["data"]), "--lr", "inf", *FT],
     r"Invalid value for '--lr': inf is not a finite number"),
]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _fifo(root: Path) -> str:
    path = root / "fifo.yaml"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: str, argv: Callable, message: str, world: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    args = argv(world)
    before = _snapshot(world["root"])
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code != 0 and "Traceback" not in err + out
    assert re.search(message, err), err
    lines = [line for line in err.splitlines() if line.strip()]
    if not lines[0].startswith("Usage:"):  # pfconvert's errors: one line, whatever the terminal width, after the header
        assert lines[-1].startswith("Error:") and all(line.startswith(("model: ", "input: ")) for line in lines[:-1])
    assert _snapshot(world["root"]) == before


def test_a_diverging_run_stops_and_keeps_the_last_finite_weights(world: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["finetune", str(world["art"]), "--data", str(world["data"]), "--lr", "1e30", *FT],
                           capsys, monkeypatch)
    error = err.strip().splitlines()[-1]
    assert code == 1 and error.startswith("Error:") and "became non-finite" in error
    # the best finite weights: the start, or a validation point before the loss diverged (warm-up keeps the first
    # steps' learning rate small, so the run can reach one)
    assert "last good checkpoint kept" in error and re.search(r"holds the best finite weights \((the start|epoch 1, "
                                                              r"step \d+)\)", error)
    exported = load_file(str(world["art"] / "finetuned.safetensors"))
    assert all(torch.isfinite(t).all() for t in exported.values())
    summary = world["art"] / "finetune.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] != "completed"
    pfconvert.load(world["art"])  # the finite start, loadable


def test_non_finite_weights_are_refused_on_load_and_convert(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    state = load_file(str(world["art"] / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_weights(state, world["art"] / "finetuned.safetensors", metadata=finetuned_metadata(world["art"]))
    code, _, err = run_cli(["eval", str(world["art"]), "--data", str(world["data"])], capsys, monkeypatch)
    assert code == 1 and "NaN or infinite values in 1 of" in err and key in err
    original = pfconvert.create_model("test_efficientnet", num_classes=10).state_dict()
    original["conv_stem.weight"] = torch.full_like(original["conv_stem.weight"], float("inf"))
    save_file(original, str(world["root"] / "diverged.safetensors"))
    code, _, err = run_cli(["convert", "test_efficientnet", "--num-classes", "10", "--checkpoint",
                            str(world["root"] / "diverged.safetensors"), "--out", str(world["root"] / "o")],
                           capsys, monkeypatch)
    assert code == 1 and "NaN or infinite values" in err and not (world["root"] / "o").exists()


def test_an_artifact_in_use_is_refused(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(world["root"])
    with exclusive(world["art"], "another pfconvert finetune"):
        code, _, err = run_cli(["finetune", str(world["art"]), "--data", str(world["data"]), *FT], capsys, monkeypatch)
        assert code == 1 and f"is in use by PID {os.getpid()} (another pfconvert finetune)" in err
        code, _, err = run_cli(["convert", "test_efficientnet", "--num-classes", "10", "--out", str(world["art"]),
                                "--overwrite"], capsys, monkeypatch)
        assert code == 1 and "is in use by PID" in err
    assert _snapshot(world["root"]) == before


def test_convert_overwrite_leaves_no_earlier_run_to_resume(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    art = world["art"]
    code, _, err = run_cli(["finetune", str(art), "--data", str(world["data"]), "--max-steps", "1", *FT],
                           capsys, monkeypatch)
    assert code == 0 and (art / "checkpoints" / "last.pt").exists(), err
    code, _, err = run_cli(["convert", "test_efficientnet", "--rule", "avgpool", "--num-classes", "10", "--out",
                            str(art), "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    assert not any((art / name).exists() for name in ("checkpoints", "metrics.jsonl", "finetune.json",
                                                      "finetuned.safetensors"))
    code, _, err = run_cli(["finetune", str(art), "--resume"], capsys, monkeypatch)
    assert code == 1 and "no checkpoint" in err


def test_resume_refuses_a_checkpoint_of_another_conversion(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    art = world["art"]
    code, _, err = run_cli(["finetune", str(art), "--data", str(world["data"]), "--max-steps", "1", *FT],
                           capsys, monkeypatch)
    assert code == 0, err
    kept = art / "checkpoints"
    shutil.move(kept, world["root"] / "kept")
    code, _, err = run_cli(["convert", "test_efficientnet", "--num-classes", "10", "--out", str(art), "--overwrite"],
                           capsys, monkeypatch)
    assert code == 0, err
    shutil.move(world["root"] / "kept", kept)  # an earlier conversion's checkpoints put back by hand
    code, _, err = run_cli(["finetune", str(art), "--resume"], capsys, monkeypatch)
    assert code == 1 and "belongs to another conversion" in err


@pytest.mark.parametrize("damage", ["config", "lr", "engine", "shape"])
def test_a_tampered_checkpoint_is_a_one_line_error(damage: str, world: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    art = world["art"]
    code, _, err = run_cli(["finetune", str(art), "--data", str(world["data"]), "--max-steps", "1", *FT],
                           capsys, monkeypatch)
    assert code == 0, err
    path = art / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    if damage == "config":
        state["config"] = "{not json"
    elif damage == "lr":
        state["config"] = state["config"].replace('"lr":null', '"lr":-5.0')  # (null: chosen by the probe)
    elif damage == "engine":
        del state["engine"]
    else:
        name = next(iter(state["engine"]["model"]))
        state["engine"]["model"][name] = torch.zeros(3, 1, 7)
    torch.save(state, path)
    code, out, err = run_cli(["finetune", str(art), "--resume"], capsys, monkeypatch)
    assert code == 1 and err.strip().splitlines()[-1].startswith("Error:") and "Traceback" not in err + out
    assert {"config": "is damaged", "lr": "setting lr is invalid", "engine": "'engine' is missing",
            "shape": "does not fit this run"}[damage] in err


def test_a_predictable_temp_name_planted_as_a_link_is_not_followed(world: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = Path(shutil.copytree(world["art"], world["root"] / "o"))  # an artifact: --overwrite replaces its files
    for name in (".recipe.json.tmp", ".model.safetensors.tmp"):
        (out / name).symlink_to(world["victim"])
    code, _, err = run_cli(["convert", "test_efficientnet", "--num-classes", "10", "--out", str(out), "--overwrite"],
                           capsys, monkeypatch)
    assert code == 0, err
    assert world["victim"].read_text() == "the user's file\n" and (out / "recipe.json").is_file()


def test_one_channel_models_finetune_and_evaluate(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    art = world["root"] / "grey"
    code, _, err = run_cli(["convert", "mobilenetv2_050", "--in-chans", "1", "--num-classes", "10", "--input-size",
                            "1,32,32", "--out", str(art)], capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_cli(["finetune", str(art), "--data", str(world["data"]), *FT], capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_cli(["eval", str(art), "--data", str(world["data"]), "--limit", "32", "--workers", "0",
                              "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["input_size"] == [1, 32, 32], err


def test_a_failed_export_prints_one_line_and_no_graph_dump(world: dict[str, Path], capfd: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.onnx

    def dumping_export(*args: object, **kwargs: object) -> None:
        os.write(1, b"graph(%input : Float(1, 3, 32, 32)):\n  %1 = aten::conv...\n" * 1000)  # what TorchScript prints
        raise RuntimeError("export failed\nwith a long native message")

    monkeypatch.setattr(torch.onnx, "export", dumping_export)
    code, out, err = run_cli(["export", str(world["art"]), "--out", str(world["root"] / "m.onnx")], capfd, monkeypatch)
    lines = err.splitlines()  # the input header, then one error line
    assert code == 1 and lines[-1].startswith("Error: ONNX export") and all(line.startswith("input: ") for line in
                                                                               lines[:-1])
    assert "graph(" not in out and not (world["root"] / "m.onnx").exists()


def test_idx_header_lies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for split in ("train", "t10k"):  # headers promise 60000 images, the files hold none
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28, 28)))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 0)))
    code, _, err = run_cli(["sensitivity", "resnet14t", "--data", str(tmp_path)], capsys, monkeypatch)
    assert code == 1 and "is corrupt: header says" in err
