"""Issue 25, artifacts and weights: hostile and careless input to ``convert --out/--overwrite``, ``--checkpoint``,
``--pretrained-file`` and the library API. Every case ends with a one-line ``Error:`` (or a typed
:class:`~pfconvert.errors.PfconvertError`) and a non-zero exit, never a traceback, and leaves what the user had
untouched."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from helpers import refused_in_one_line, run_cli
from safetensors.torch import load_file, save_file

import pfconvert
from pfconvert._files import LOCK_FILE
from pfconvert.conversion.artifact import FINETUNED_FILE, REMOVED_FILE, WEIGHTS_FILE, Recipe
from pfconvert.errors import ArtifactError, CheckpointError, PfconvertError, TrainingError, UsageError

MODEL = "test_efficientnet"  # timm's tiny test model: it has a pretrained config (classifier 'classifier', 1000)
SMALL = ["--input-size", "3,32,32"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but pfconvert's lock file) with the hash of its content; links by their target."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = f"-> {os.readlink(p)}"
        elif p.name != LOCK_FILE:
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _state(num_classes: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(MODEL, num_classes=num_classes).state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Weight files of ``test_efficientnet``: complete, with layers missing, with an extra layer, a 10-class head,
    an int8 weight, empty, truncated, and a torch file with a pickled object besides the tensors."""
    root = tmp_path_factory.mktemp("weights")
    full = _state()
    made = {
        "good": full,
        "missing": {k: v for k, v in full.items() if not k.startswith("blocks.2")},
        "extra": {**full, "extra.weight": torch.ones(3)},
        "head10": _state(10),
        "int8": {**full, "conv_stem.weight": (full["conv_stem.weight"] * 10).to(torch.int8)},
    }
    paths = {}
    for name, state in made.items():
        save_file(state, str(root / f"{name}.safetensors"))
        paths[name] = root / f"{name}.safetensors"
    torch.save(made["int8"], root / "int8.pth")
    paths["int8pth"] = root / "int8.pth"
    (root / "empty.safetensors").write_bytes(b"")
    paths["empty"] = root / "empty.safetensors"
    data = paths["good"].read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    paths["truncated"] = root / "truncated.safetensors"
    import argparse

    torch.save({**full, "args": argparse.Namespace(lr=0.1)}, root / "pickled.pth")
    paths["pickled"] = root / "pickled.pth"
    return paths


@pytest.fixture()
def world(files: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A user's folder: a folder of their own that is not an artifact, a file, and the weight files."""
    foreign = tmp_path / "runs"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "last.pt").write_text("the user's checkpoint\n")
    (foreign / "metrics.jsonl").write_text("{}\n")
    (foreign / "model.onnx").write_text("the user's export\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    return {"root": tmp_path, "foreign": foreign, "victim": victim, **files}


def _planted_lock(w: dict[str, Path], kind: str) -> str:
    out = w["root"] / f"lock-{kind}"
    out.mkdir()
    if kind == "symlink":
        (out / LOCK_FILE).symlink_to(w["victim"])
    elif kind == "hardlink":
        os.link(w["victim"], out / LOCK_FILE)
    else:
        (out / LOCK_FILE).mkdir()
    return str(out)


def _convert(*args: str) -> Callable[[dict[str, Path]], list[str]]:
    """``convert test_efficientnet ARGS --out ROOT/o`` (with {name} replaced by the path of a weight file)."""
    return lambda w: ["convert", MODEL, *SMALL, *[a.format(**{k: str(v) for k, v in w.items()}) for a in args]]


CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("1 --overwrite on a folder that is not an artifact", _convert("--out", "{foreign}", "--overwrite"),
     r"is not a pfconvert artifact \(it has no recipe.json\).*choose a new or empty folder"),
    ("3 --pretrained-file with missing keys", _convert("--pretrained-file", "{missing}", "--out", "{root}/o"),
     r"does not fit the model: 10 missing keys \(e.g. blocks.2.0.conv_exp.weight.*the file lacks these layers"),
    ("3 --pretrained-file with missing keys, --num-classes 10",
     _convert("--num-classes", "10", "--new-head", "--pretrained-file", "{missing}", "--out", "{root}/o"),
     r"does not fit the model: 10 missing keys"),
    ("3 --pretrained-file with an extra key", _convert("--pretrained-file", "{extra}", "--out", "{root}/o"),
     r"1 unexpected keys \(e.g. extra.weight\)"),
    ("3 --checkpoint with an extra key", _convert("--checkpoint", "{extra}", "--out", "{root}/o"),
     r"1 unexpected keys \(e.g. extra.weight\)"),
    ("3 --pretrained-file: a 1000-class head, --num-classes 10",
     _convert("--num-classes", "10", "--pretrained-file", "{good}", "--out", "{root}/o"),
     r"the file's classifier has 1000 classes: pass --num-classes 1000 to load it, or --new-head"),
    ("3 --checkpoint: a 1000-class head, --num-classes 10",
     _convert("--num-classes", "10", "--checkpoint", "{good}", "--out", "{root}/o"),
     r"the file's classifier has 1000 classes: pass --num-classes 1000 to load it, or --new-head"),
    ("3 --pretrained-file: the user's 10-class head without --num-classes",
     _convert("--pretrained-file", "{head10}", "--out", "{root}/o"), r"the file's classifier has 10 classes"),
    ("3 --new-head without a weights file", _convert("--new-head", "--out", "{root}/o"),
     r"--new-head applies to weights from a file"),
    ("8 --pretrained-file: an empty .safetensors", _convert("--pretrained-file", "{empty}", "--out", "{root}/o"),
     r"cannot read checkpoint .*empty.safetensors: the file is empty"),
    ("8 --pretrained-file: a truncated .safetensors",
     _convert("--pretrained-file", "{truncated}", "--out", "{root}/o"),
     r"not a complete .safetensors file .*truncated or damaged"),
    ("8 --checkpoint: a truncated .safetensors", _convert("--checkpoint", "{truncated}", "--out", "{root}/o"),
     r"not a complete .safetensors file"),
    ("9 --out of 300 characters", lambda w: ["convert", MODEL, *SMALL, "--out", str(w["root"] / ("x" * 300))],
     r"file name too long; choose a shorter --out"),
    ("9 --out an existing file, --overwrite", _convert("--out", "{victim}", "--overwrite"),
     r"is a file, not a folder .*the file is kept"),
    ("9 the lock file planted as a symlink", lambda w: _convert("--out", _planted_lock(w, "symlink"),
                                                                "--overwrite")(w),
     r"is not pfconvert's lock file"),
    ("9 the lock file planted as a hard link", lambda w: _convert("--out", _planted_lock(w, "hardlink"),
                                                                  "--overwrite")(w),
     r"is not pfconvert's lock file"),
    ("9 the lock file planted as a folder", lambda w: _convert("--out", _planted_lock(w, "dir"), "--overwrite")(w),
     r"is not pfconvert's lock file"),
    ("15 --checkpoint: int8 weights (.safetensors)", _convert("--checkpoint", "{int8}", "--out", "{root}/o"),
     r"holds torch.int8 tensors where the model has floating-point weights .*conv_stem.weight"),
    ("15 --checkpoint: int8 weights (.pth)", _convert("--checkpoint", "{int8pth}", "--out", "{root}/o"),
     r"holds torch.int8 tensors"),
    ("15 --pretrained-file: int8 weights", _convert("--pretrained-file", "{int8}", "--out", "{root}/o"),
     r"holds torch.int8 tensors"),
    ("22 --checkpoint: a pickled object besides the tensors", _convert("--checkpoint", "{pickled}", "--out",
                                                                       "{root}/o"),
     r"holds pickled Python objects \(argparse.Namespace\) besides tensors, which pfconvert never unpickles"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: str, argv: Callable, message: str, world: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    args = argv(world)
    before = _snapshot(world["root"])
    err = refused_in_one_line(args, message, capsys, monkeypatch)
    assert "weights_only=False" not in err  # never a hint to load unsafely
    assert _snapshot(world["root"]) == before


@pytest.mark.slow
def test_new_head_is_explicit_and_said(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    good = load_file(str(world["good"]))
    for option in ("--pretrained-file", "--checkpoint"):
        out = world["root"] / option.strip("-")
        code, _, err = run_cli(["convert", MODEL, *SMALL, "--num-classes", "10", option, str(world["good"]),
                                "--new-head", "--out", str(out)], capsys, monkeypatch)
        assert code == 0, err
        assert "new classifier (randomly initialised)" in " ".join(err.split())  # the header says so
        recipe = json.loads((out / "recipe.json").read_text())
        assert recipe["source"]["new_head"] is True and recipe["model_kwargs"]["num_classes"] == 10
        model = pfconvert.load(out)
        assert model.classifier.out_features == 10
        assert torch.equal(model.conv_stem.weight, good["conv_stem.weight"])  # the rest: loaded


@pytest.mark.slow
def test_the_users_own_head_is_loaded_not_reinitialised(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = world["root"] / "mine"
    code, _, err = run_cli(["convert", MODEL, *SMALL, "--num-classes", "10", "--pretrained-file",
                            str(world["head10"]), "--out", str(out)], capsys, monkeypatch)
    assert code == 0 and "new classifier" not in err, err
    head = load_file(str(world["head10"]))["classifier.weight"]
    assert torch.equal(pfconvert.load(out).classifier.weight, head)
    assert json.loads((out / "recipe.json").read_text())["source"]["weights"] == "pretrained-file"


@pytest.mark.slow
def test_overwrite_replaces_only_an_artifacts_own_files(ft_artifact: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    (art / "notes.txt").write_text("the user's notes\n")
    (art / "checkpoints").mkdir()
    (art / "checkpoints" / "last.pt").write_text("stale\n")
    (art / "checkpoints" / "mine.pt").write_text("the user's\n")
    (art / "metrics.jsonl").write_text("{}\n")
    code, _, err = run_cli(["convert", MODEL, "--num-classes", "10", "--rule", "avgpool", "--out", str(art),
                            "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    assert (art / "notes.txt").read_text() == "the user's notes\n"
    assert (art / "checkpoints" / "mine.pt").read_text() == "the user's\n"
    assert not (art / "checkpoints" / "last.pt").exists() and not (art / "metrics.jsonl").exists()
    assert json.loads((art / "recipe.json").read_text())["rule_name"] == "avgpool"
    assert not [p for p in art.iterdir() if p.name.startswith(".pfconvert-")]  # no temporary folder left


# -- library ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted() -> tuple[Any, Any]:
    return pfconvert.convert(MODEL, "maxpool", num_classes=10, input_size=(3, 32, 32))


def test_save_refuses_a_foreign_folder_even_with_overwrite(converted: tuple, world: dict[str, Path]) -> None:
    before = _snapshot(world["root"])
    with pytest.raises(ArtifactError, match="is not a pfconvert artifact"):
        pfconvert.save(*converted, world["foreign"], overwrite=True)
    assert _snapshot(world["root"]) == before


@pytest.mark.parametrize("failing", [1, 2, 3])
def test_a_full_disk_leaves_nothing_half_written(converted: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 failing: int) -> None:
    """The first, second or third file written fails with ENOSPC: a new folder is gone again, an existing artifact
    keeps its files."""
    import pfconvert.conversion.artifact as artifact

    existing = pfconvert.save(*converted, tmp_path / "existing")
    before = _snapshot(existing)
    real = artifact.atomic_write
    calls = {"n": 0}

    def full_disk(path: Path, write: Callable, **kwargs: Any) -> Path:
        calls["n"] += 1
        if calls["n"] == failing:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write, **kwargs)

    monkeypatch.setattr(artifact, "atomic_write", full_disk)
    monkeypatch.setattr(artifact, "write_text", lambda path, text: full_disk(path, lambda t: t.write_text(text)))
    with pytest.raises(ArtifactError, match=r"no space left on device; free some space .*nothing was changed"):
        pfconvert.save(*converted, tmp_path / "new" / "art")
    assert not (tmp_path / "new").exists()
    calls["n"] = 0
    with pytest.raises(ArtifactError, match="no space left on device"):
        pfconvert.save(*converted, existing, overwrite=True)
    assert _snapshot(existing) == before
    pfconvert.load(existing)


def test_a_read_only_artifact_is_one_line(converted: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = pfconvert.save(*converted, tmp_path / "art")
    before = _snapshot(art)
    real = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(art)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)  # root ignores file modes: the file system says no instead
    with pytest.raises(ArtifactError, match=r"cannot lock .*read-only file system; the file system is read-only"):
        pfconvert.save(*converted, art, overwrite=True)
    assert _snapshot(art) == before


def test_a_timm_module_converted_by_the_library_saves_and_loads(tmp_path: Path) -> None:
    """Issue 25 #14: the tour, ``save(*convert(timm.create_model(name, num_classes=10), rule), out)``."""
    made = timm.create_model(MODEL, num_classes=10, in_chans=1)
    out = pfconvert.save(*pfconvert.convert(made, "maxpool", input_size=(1, 32, 32)), tmp_path / "tour")
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["model_kwargs"] == {"num_classes": 10, "in_chans": 1}
    loaded = pfconvert.load(out)
    assert torch.equal(loaded.classifier.weight, made.classifier.weight)


def test_a_module_timm_cannot_rebuild_is_refused_at_save(tmp_path: Path) -> None:
    made = timm.create_model(MODEL, num_classes=10)
    made.reset_classifier(7)  # after creation: create_model's kwargs no longer describe it
    model, record = pfconvert.convert(made, "maxpool", input_size=(3, 32, 32))
    with pytest.raises(ArtifactError, match=r"does not rebuild this model \(classifier.weight: \(7, 256\) here, "
                                            r"\(10, 256\) rebuilt\)"):
        pfconvert.save(model, record, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_swapped_or_stray_weight_files_are_refused(converted: tuple, tmp_path: Path) -> None:
    """Issue 25 #16: the recipe records each weight file's SHA-256; fine-tuned weights name their conversion."""
    a = pfconvert.save(*converted, tmp_path / "a")
    b = pfconvert.save(*pfconvert.convert(MODEL, "maxpool", num_classes=10, input_size=(3, 32, 32)), tmp_path / "b")
    kept = (a / WEIGHTS_FILE).read_bytes()
    shutil.copy(b / WEIGHTS_FILE, a / WEIGHTS_FILE)  # same shapes, other values
    with pytest.raises(ArtifactError, match=f"{WEIGHTS_FILE} is not the file this artifact was written with"):
        pfconvert.load(a)
    (a / WEIGHTS_FILE).write_bytes(kept)
    shutil.copy(b / REMOVED_FILE, a / REMOVED_FILE)
    with pytest.raises(ArtifactError, match=f"{REMOVED_FILE} is not the file this artifact was written with"):
        pfconvert.build_original(Recipe.from_file(a / "recipe.json"), a)
    save_file(load_file(str(b / WEIGHTS_FILE)), str(b / FINETUNED_FILE))  # a stray file: no finetune.json, no tag
    with pytest.raises(ArtifactError, match="does not belong to this artifact: nothing says it was fine-tuned"):
        pfconvert.load(b)
    assert pfconvert.load(b, weights="converted") is not None
    from pfconvert.conversion.artifact import finetuned_metadata, save_weights

    c = pfconvert.save(*converted, tmp_path / "c")
    save_weights(pfconvert.load(c), c / FINETUNED_FILE, metadata=finetuned_metadata(c))
    pfconvert.load(c)  # its own: loads
    shutil.copy(c / FINETUNED_FILE, b / FINETUNED_FILE)
    with pytest.raises(ArtifactError, match="it was fine-tuned from another conversion"):
        pfconvert.load(b)
    recipe = json.loads((c / "recipe.json").read_text())
    del recipe["weights"]  # an artifact written before hashes were recorded still loads
    (c / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    (c / FINETUNED_FILE).unlink()
    pfconvert.load(c)
    old = Recipe.from_file(c / "recipe.json")  # and reads back as written: its fingerprint (resume's check) is kept
    assert old.to_json() == (c / "recipe.json").read_text()


def test_non_float_weights_are_refused_but_integer_buffers_load(tmp_path: Path) -> None:
    state = _state(10)
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    save_file(state, str(tmp_path / "ok.safetensors"))
    pfconvert.create_model(MODEL, checkpoint=tmp_path / "ok.safetensors", num_classes=10)
    state["bn1.weight"] = state["bn1.weight"].to(torch.bool)
    save_file(state, str(tmp_path / "bool.safetensors"))
    with pytest.raises(CheckpointError, match="holds torch.bool tensors where the model has floating-point"):
        pfconvert.create_model(MODEL, checkpoint=tmp_path / "bool.safetensors", num_classes=10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
@pytest.mark.parametrize(("name", "rule"), [(MODEL, "maxpool"), ("resnet10t", "basic-max")])
def test_bf16_and_float64_models_convert_in_train_mode(dtype: torch.dtype, name: str, rule: str) -> None:
    """Issue 25 #18 (not reproduced on this tree; kept as its regression test)."""
    model = timm.create_model(name, num_classes=10).to(dtype).train()
    converted, record = pfconvert.convert(model, rule, input_size=(3, 32, 32))
    assert record.replacements and converted.training
    assert all(p.dtype == dtype for p in converted.parameters())


WRONG_TYPES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("convert(m, None)", lambda c: pfconvert.convert(c["module"], None)),
    ("convert(None)", lambda c: pfconvert.convert(None)),
    ("convert(m, 5)", lambda c: pfconvert.convert(c["module"], 5)),
    ("convert(m, input_size='abc')", lambda c: pfconvert.convert(c["module"], "maxpool", input_size="abc")),
    ("convert(name, checkpoint=5)", lambda c: pfconvert.convert(MODEL, checkpoint=5)),
    ("convert(name, inplace='yes')", lambda c: pfconvert.convert(MODEL, inplace="yes")),
    ("convert_pair(module)", lambda c: pfconvert.convert_pair(c["module"])),
    ("preview(None, rule)", lambda c: pfconvert.preview(None, "maxpool")),
    ("save(None, record, out)", lambda c: pfconvert.save(None, c["record"], c["out"])),
    ("save(model, None, out)", lambda c: pfconvert.save(c["model"], None, c["out"])),
    ("save(model, dict, out)", lambda c: pfconvert.save(c["model"], {}, c["out"])),
    ("save(model, record, None)", lambda c: pfconvert.save(c["model"], c["record"], None)),
    ("save(model, record, out, overwrite='yes')", lambda c: pfconvert.save(c["model"], c["record"], c["out"],
                                                                           overwrite="yes")),
    ("load(None)", lambda c: pfconvert.load(None)),
    ("load(5)", lambda c: pfconvert.load(5)),
    ("load(path, weights=None)", lambda c: pfconvert.load(c["out"], weights=None)),
    ("load_artifact(None)", lambda c: pfconvert.load_artifact(None)),
    ("build_original(None, path)", lambda c: pfconvert.build_original(None, c["out"])),
    ("create_model(None)", lambda c: pfconvert.create_model(None)),
    ("create_model(name, checkpoint=5)", lambda c: pfconvert.create_model(MODEL, checkpoint=5)),
    ("load_rules(None)", lambda c: pfconvert.load_rules(None)),
    ("finetune(path, dict)", lambda c: pfconvert.finetune(c["out"], {"data": "x"})),
    ("finetune(None)", lambda c: pfconvert.finetune(None)),
    ("FinetuneConfig(lr='abc')", lambda c: pfconvert.FinetuneConfig(data="x", lr="abc")),
    ("FinetuneConfig(no data)", lambda c: pfconvert.FinetuneConfig()),
    ("evaluate_artifact(None, None)", lambda c: pfconvert.evaluate_artifact(None, None)),
    ("evaluate_artifact(path, data, limit='3')", lambda c: pfconvert.evaluate_artifact(c["out"], "x", limit="3")),
    ("count_macs(None)", lambda c: pfconvert.count_macs(None)),
    ("count_macs(m, input_size=5)", lambda c: pfconvert.count_macs(c["module"], input_size=5)),
    ("run_report(None, None)", lambda c: pfconvert.run_report(None, None)),
    ("export_onnx(None, out)", lambda c: pfconvert.export_onnx(None, "x.onnx")),
    ("optimize_for_cpu(m, None)", lambda c: pfconvert.optimize_for_cpu(c["module"], None)),
]


@pytest.mark.parametrize(("case", "call"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_types_in_the_library_are_one_line_typed_errors(case: str, call: Callable, converted: tuple,
                                                             tmp_path: Path) -> None:
    """Issue 25 #17: a typed error (a UsageError is also a TypeError) in one line, naming the argument."""
    ctx = {"module": torch.nn.Conv2d(3, 3, 3), "model": converted[0], "record": converted[1], "out": tmp_path / "o"}
    with pytest.raises(PfconvertError) as caught:
        call(ctx)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, (UsageError, TrainingError)), type(caught.value)
    if isinstance(caught.value, UsageError):
        assert isinstance(caught.value, TypeError) and str(caught.value).startswith("pfconvert.")
    assert not (tmp_path / "o").exists()


def test_lists_still_stand_for_tuples() -> None:
    _, record = pfconvert.convert(timm.create_model(MODEL), "maxpool", input_size=[3, 32, 32])  # type: ignore[arg-type]
    assert record.input_size == (3, 32, 32)
