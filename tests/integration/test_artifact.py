"""Artifacts: save, reload by replaying the recipe, rebuild the original; checkpoints in and bad files out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from helpers import tiny_input
from safetensors.torch import save_file

import pfconvert
from pfconvert.conversion.artifact import (FINETUNED_FILE, RECIPE_FILE, build_original, finetuned_metadata, load_artifact,
                                          save_weights)
from pfconvert.conversion.models import create_model
from pfconvert.errors import ArtifactError, CheckpointError, ModelError

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """An original resnet18 checkpoint, its r50-max-style conversion, and the saved artifact."""
    root = tmp_path_factory.mktemp("art")
    torch.manual_seed(1)
    original = timm.create_model("resnet18", num_classes=7).eval()
    ckpt = root / "orig.pth"
    torch.save({"state_dict": original.state_dict()}, ckpt)
    rule = root / "basic.yaml"
    rule.write_text("name: basic-max\nrules: [{name: c2, match: {parent: BasicBlock, path: '*.conv2', "
                    "same_channels: true}, replace: {op: max_pool}, absorb: [norm]}]\n")
    model, record = pfconvert.convert("resnet18", rule, checkpoint=ckpt, input_size=SIZE, num_classes=7)
    out = pfconvert.save(model, record, root / "out")
    return out, original, model.eval()


@pytest.mark.slow
def test_round_trip_gives_the_same_model(artifact: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    out, _, converted = artifact
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["model"] == "resnet18" and recipe["model_kwargs"] == {"num_classes": 7}
    assert recipe["rule_name"] == "basic-max" and len(recipe["rule_sha256"]) == 64
    assert {"torch", "timm", "pfconvert"} <= set(recipe["versions"]) and len(recipe["replaced"]) == 8
    assert recipe["checkpoint"].endswith("orig.pth") and recipe["checkpoint_sha256"]
    loaded = pfconvert.load(out).eval()
    assert type(loaded) is type(converted)
    x = tiny_input(SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))


@pytest.mark.slow
def test_original_is_rebuilt_exactly(artifact: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    out, original, _ = artifact
    art = load_artifact(out)
    teacher = build_original(art.recipe, out).eval()
    x = tiny_input(SIZE)
    with torch.no_grad():
        assert torch.equal(teacher(x), original(x))


@pytest.mark.slow
def test_finetuned_weights_are_preferred(artifact: tuple[Path, torch.nn.Module, torch.nn.Module],
                                         tmp_path: Path) -> None:
    out, _, converted = artifact
    state = {k: v + 1 if v.is_floating_point() else v for k, v in converted.state_dict().items()}
    save_weights(state, out / FINETUNED_FILE, metadata=finetuned_metadata(out))  # as fine-tuning writes it
    try:
        assert torch.equal(pfconvert.load(out).fc.weight, state["fc.weight"])
        assert torch.equal(pfconvert.load(out, weights="converted").fc.weight, converted.fc.weight)
    finally:
        (out / FINETUNED_FILE).unlink()


def test_existing_output_is_not_overwritten(artifact: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    out, _, converted = artifact
    before = (out / RECIPE_FILE).read_text()
    _, record = pfconvert.convert(converted, "maxpool", allow_empty=True, input_size=SIZE)
    with pytest.raises(ArtifactError, match="already exists.*--overwrite"):
        pfconvert.save(converted, record, out)
    assert (out / RECIPE_FILE).read_text() == before


def test_bad_artifacts(tmp_path: Path, artifact: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        pfconvert.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="recipe.json is missing"):
        pfconvert.load(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    out = artifact[0]
    (broken / RECIPE_FILE).write_text((out / RECIPE_FILE).read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="is not the file this artifact was written with"):
        pfconvert.load(broken)  # the recipe records the weights' SHA-256
    recipe = json.loads((broken / RECIPE_FILE).read_text())
    del recipe["weights"]  # a recipe from before hashes were recorded: the file is read, and found corrupt
    (broken / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(ArtifactError, match="cannot read weights"):
        pfconvert.load(broken)


@pytest.mark.slow
def test_checkpoints_safetensors_and_bad_files(tmp_path: Path) -> None:
    model = timm.create_model("resnet10t", num_classes=3)
    st = tmp_path / "w.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(st))
    loaded = create_model("resnet10t", checkpoint=st, num_classes=3)
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(CheckpointError, match="does not fit the model.*--num-classes"):
        create_model("resnet10t", checkpoint=st, num_classes=5)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("resnet10t", checkpoint=bad)
    with pytest.raises(CheckpointError, match="not found"):
        create_model("resnet10t", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(ModelError, match="unknown timm model 'resnet5O'.*did you mean"):
        create_model("resnet5O")
