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


_RULE = "name: basic-max\nrules: [{name: c2, match: {path: '*.conv2'}, replace: {op: max_pool}}]\n"
_LEGACY = {  # a recipe as an early pfconvert wrote it: no ops, note, new_head, crop_chosen, weights or pruning
    "model": "resnet18", "model_kwargs": {"num_classes": 7}, "checkpoint": None, "rule_name": "basic-max",
    "rule_text": _RULE, "rule_sha256": "", "input_size": [3, 64, 64],
    "replaced": [{"path": "layer1.0.conv2", "rule": "c2", "old": "Conv2d 3x3 64->64", "new": "MaxPool2d 3x3",
                  "absorbed": ["layer1.0.bn2"], "params_removed": 36992}],
    "versions": {"pfconvert": "0.1.0", "torch": "2.5.1", "timm": "1.0.12"}, "params_before": 11180103,
    "params_after": 11143111, "checkpoint_sha256": None, "created": "2026-11-26T10:00:00+00:00",
    "format": "pfconvert-artifact/1", "extra": {},
    "source": {"requested": "resnet18", "name": "resnet18", "kwargs": {"num_classes": 7}, "weights": "random",
               "detail": None, "sha256": None},
    "data_config": {"input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
_LEGACY_FINGERPRINT = "c5a1ba4b2c63c5726ed2467ec18ac03cce3cf07b43f5718bf8325de096b1c466"
"""Its fingerprint as pfconvert computed it before the recipe's members were typed (fine-tuned weights record it)."""


def _legacy() -> dict:
    from pfconvert.rules.loading import rule_sha256

    return json.loads(json.dumps({**_LEGACY, "rule_sha256": rule_sha256(_RULE)}))


def test_recipe_members_are_typed_and_an_old_recipe_reads_back_byte_for_byte(tmp_path: Path) -> None:
    from pfconvert.conversion.artifact import Recipe
    from pfconvert.conversion.models import ModelSource
    from pfconvert.conversion.rewrite import Replacement
    from pfconvert.data.config import DataConfig

    text = json.dumps(_legacy(), indent=2) + "\n"
    (tmp_path / RECIPE_FILE).write_text(text)
    recipe = Recipe.from_file(tmp_path / RECIPE_FILE)
    assert isinstance(recipe.replaced[0], Replacement) and recipe.replaced[0].ops == {}  # none recorded then
    assert isinstance(recipe.source, ModelSource) and recipe.source.new_head is False
    assert isinstance(recipe.data_config, DataConfig) and recipe.data() is recipe.data_config
    assert recipe.data_config.input_size == (3, 64, 64) and recipe.pruning is None
    assert recipe.to_json() == text and recipe.fingerprint() == _LEGACY_FINGERPRINT
    later = _legacy()  # keys of a later version, and numbers written otherwise, are kept as they were too
    later["source"]["future"] = [1, 2]
    later["replaced"][0] = {"later": {"x": 1}, **later["replaced"][0]}
    later["data_config"]["crop_pct"] = 1
    text = json.dumps(later, indent=2) + "\n"
    assert Recipe.from_dict(json.loads(text)).to_json() == text


def test_a_changed_record_is_written_as_changed_and_a_malformed_one_is_refused_in_one_line() -> None:
    import dataclasses

    from pfconvert.conversion.artifact import Recipe

    recipe = Recipe.from_dict(_legacy())
    recipe.source = dataclasses.replace(recipe.source, weights="checkpoint")
    recipe.replaced[0].note = "an identity on its 1x1 map"
    data = json.loads(recipe.to_json())
    assert data["source"]["weights"] == "checkpoint" and data["source"]["new_head"] is False
    assert data["replaced"][0]["note"] == "an identity on its 1x1 map" and data["data_config"] == _LEGACY["data_config"]
    for member, value, field in [("source", {"requested": "x"}, "source.name"),
                                 ("replaced", [{"path": "a", "rule": "r", "old": "o", "new": "n", "absorbed": 5}],
                                  "replaced.0.absorbed"),
                                 ("data_config", {**_LEGACY["data_config"], "input_size": [3, 64]},
                                  "data_config.input_size.2"),
                                 ("data_config", {**_LEGACY["data_config"], "crop_pct": 2.0}, "data_config"),
                                 ("pruning", {"round_to": 8}, "pruning.ratio")]:
        with pytest.raises(ArtifactError, match=rf"malformed recipe, field '{field}'") as info:
            Recipe.from_dict({**_legacy(), member: value})
        assert "\n" not in str(info.value)
