"""Sensitivity study: per-group conversion, ranking, and the rule file it writes."""

from __future__ import annotations

import pytest
from helpers import meta_model
from torch import nn

import pfconvert
from pfconvert.errors import RuleError
from pfconvert.rules import load_rules
from pfconvert.study.groups import LayerGroup, StageGroup
from pfconvert.study.sensitivity import run_sensitivity, selected_rules

COST = {0: 0.2, 1: 0.5, 2: 3.0, 3: 1.5}  # accuracy points lost per converted block, by stage


def _fake_top1(model: nn.Module) -> float:
    """A deterministic stand-in for evaluation: each converted bottleneck costs COST[stage] points."""
    lost = 0.0
    for stage, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
        lost += COST[stage] * sum(isinstance(block.conv2, nn.MaxPool2d) for block in layer)
    return 80.0 - lost


def _fake_latency(original: nn.Module, variant: nn.Module) -> tuple[float, float]:
    def ms(model: nn.Module) -> float:
        return 10.0 - 0.1 * sum(isinstance(m, nn.MaxPool2d) for m in model.modules())

    return ms(original), ms(variant)


def test_stages_are_ranked_by_accuracy_drop() -> None:
    model = meta_model("resnet50")
    result = run_sensitivity(model, load_rules("r50-max"), (3, 224, 224), _fake_top1, _fake_latency)
    assert result.base_top1 == 80.0 and result.base_latency_ms == pytest.approx(9.9)
    ranked = result.ranked()
    assert [g.group for g in ranked] == [StageGroup(0), StageGroup(1), StageGroup(3), StageGroup(2)]
    assert [g["group"] for g in result.to_dict()["groups"]] == ["stage 0", "stage 1", "stage 3", "stage 2"]
    assert [len(g.layers) for g in ranked] == [3, 4, 3, 6]
    assert ranked[0].drop == pytest.approx(0.6) and ranked[-1].drop == pytest.approx(18.0)
    assert ranked[0].latency_ratio == pytest.approx((10.0 - 0.1 * 4) / 9.9)  # stem max-pool + 3 new ones
    assert all(g.params_removed > 0 for g in ranked)
    assert isinstance(model.layer1[0].conv2, nn.Conv2d), "the original is not modified"


@pytest.mark.slow
def test_selected_rule_converts_only_the_cheap_groups() -> None:
    model = meta_model("resnet50")
    result = run_sensitivity(model, load_rules("r50-max"), (3, 224, 224), _fake_top1, _fake_latency)
    rules = selected_rules(load_rules("r50-max"), result, max_drop=5.0)
    assert rules.name == "r50-max-selected"
    converted, record = pfconvert.convert(model, rules)
    assert {r.path.split(".")[0] for r in record.replacements} == {"layer1", "layer2", "layer4"}
    assert len(record.replacements) == 10 and isinstance(converted.layer3[0].conv2, nn.Conv2d)
    with pytest.raises(RuleError, match="no group stays within --max-drop 0.1"):
        selected_rules(load_rules("r50-max"), result, max_drop=0.1)


@pytest.mark.slow
def test_layer_groups() -> None:
    result = run_sensitivity(meta_model("resnet50"), load_rules("r50-max"), (3, 224, 224), _fake_top1, _fake_latency,
                             by="layer")
    assert len(result.groups) == 16 and result.ranked()[0].layers == ["layer1.0.conv2"]
    assert result.ranked()[0].group == LayerGroup("layer1.0.conv2") and result.to_dict()["groups"][0]["group"] == (
        "layer1.0.conv2")


@pytest.mark.slow
def test_cli_on_fashion_mnist(ft_fmnist_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The command end to end on real data: JSON ranking on stdout and the selected rule file."""
    import json
    import sys

    from pfconvert.cli.app import main

    rule_file = tmp_path / "selected.yaml"
    monkeypatch.setattr(sys, "argv", [
        "pfconvert", "sensitivity", "resnet14t", "--rule", "r50-max", "--data", str(ft_fmnist_dir), "--num-classes", "10",
        "--input-size", "32", "--limit", "64", "--bn-recalib-images", "32", "--batch-size", "32",
        "--max-drop", "100", "--write-rule", str(rule_file), "--json"])
    main()
    data = json.loads(capsys.readouterr().out)
    assert [len(g["layers"]) for g in data["groups"]] == [1, 1, 1, 1]
    assert all(0 <= g["top1"] <= 100 and g["latency_ms"] > 0 for g in data["groups"])
    selected = load_rules(rule_file)
    assert len(selected.ruleset.rules[0].match.path or []) == 4


def test_cli_refuses_an_existing_rule_file_as_an_existing_output(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from pfconvert.cli.app import _register, app
    from pfconvert.errors import OutputExistsError

    _register()
    rule_file = tmp_path / "selected.yaml"
    rule_file.write_text("mine")
    result = CliRunner().invoke(app, ["sensitivity", "resnet14t", "--rule", "r50-max", "--data", str(tmp_path),
                                      "--max-drop", "1", "--write-rule", str(rule_file)])
    assert isinstance(result.exception, OutputExistsError) and not isinstance(result.exception, RuleError)
    assert "already exists" in str(result.exception) and rule_file.read_text() == "mine"
