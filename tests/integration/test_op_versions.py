"""Versioned ops in artifacts: each replacement records its ops and their versions, and loading refuses (or
migrates) an artifact whose ops changed meaning, instead of replaying a different network."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from torch import nn

import pfconvert
from pfconvert.errors import ArtifactError
from pfconvert.ops import _registry
from pfconvert.ops.kernels import FastMaxPool2d
from pfconvert.rules import parse_rules

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, record = pfconvert.convert("mobilenetv2_050", "maxpool", input_size=SIZE, num_classes=10)
    return pfconvert.save(model, record, tmp_path_factory.mktemp("versions") / "mnv2-maxpool")


def _with_version(monkeypatch: pytest.MonkeyPatch, name: str, version: int, **migrations: object) -> None:
    op = _registry.get_op(name)
    monkeypatch.setitem(_registry._OPS, name, dataclasses.replace(op, version=version, **migrations))


def _pools(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, FastMaxPool2d))}


def test_each_replacement_records_its_ops_and_versions(artifact: Path) -> None:
    replaced = json.loads((artifact / "recipe.json").read_text())["replaced"]
    assert replaced and all(entry["ops"] == {"max_pool": 1} for entry in replaced)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU())
    rules = parse_rules("name: t\nrules: [{name: r, match: {stride: 2}, replace: {op: sequence, steps: "
                        "[{op: avg_pool, kernel_size: 2, stride: 2, padding: 0}, {op: keep, stride: 1}]}}]")
    assert [r.ops for r in pfconvert.preview(net, rules, input_size=(4, 8, 8))] == [
        {"sequence": 1, "avg_pool": 1, "keep": 1}]


def test_a_changed_op_is_refused_in_one_line(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pools(pfconvert.load(artifact)) == {"FastMaxPool2d"}  # what max_pool builds
    _with_version(monkeypatch, "max_pool", 2)
    with pytest.raises(ArtifactError) as info:
        pfconvert.load(artifact)
    message = str(info.value)
    assert "\n" not in message and str(artifact) in message
    assert "op 'max_pool' was version 1" in message and "version 2 now" in message and "pfconvert convert" in message


def test_a_migration_rewrites_the_specs_before_replay(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 2 of max_pool means something else; its migration says version 1 meant what avg_pool builds now (a
    made-up history that makes the migrated network visibly different)."""
    seen: list[dict] = []

    def v1_to_v2(spec: dict) -> dict:
        seen.append(spec)
        return {"op": "avg_pool"}

    _with_version(monkeypatch, "max_pool", 2, migrations={1: v1_to_v2})
    model = pfconvert.load(artifact)
    assert seen == [{"op": "max_pool"}] and _pools(model) == {"AvgPool2d"}


def test_old_artifacts_without_versions_load_as_version_1(artifact: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for file in artifact.iterdir():
        (old / file.name).write_bytes(file.read_bytes())
    recipe = json.loads((artifact / "recipe.json").read_text())
    for entry in recipe["replaced"]:
        del entry["ops"]
    (old / "recipe.json").write_text(json.dumps(recipe))
    assert _pools(pfconvert.load(old)) == {"FastMaxPool2d"}  # version 1 == version 1: replayed
    _with_version(monkeypatch, "max_pool", 2)
    with pytest.raises(ArtifactError, match="op 'max_pool' was version 1"):
        pfconvert.load(old)


def test_an_artifact_from_a_newer_op_is_refused(artifact: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    for file in artifact.iterdir():
        (new / file.name).write_bytes(file.read_bytes())
    recipe = json.loads((artifact / "recipe.json").read_text())
    for entry in recipe["replaced"]:
        entry["ops"] = {"max_pool": 3}
    (new / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ArtifactError, match="op 'max_pool' is version 3 in this artifact but version 1 here; upgrade"):
        pfconvert.load(new)
