"""Rule files: built-ins validate, and bad input fails naming the file, rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfconvert.errors import RuleError
from pfconvert.ops.pool import MaxPoolSpec
from pfconvert.ops.sequence import SequenceSpec
from pfconvert.rules import builtin_names, list_rules, load_rules, parse_rules
from pfconvert.rules.loading import builtin_text

GOOD = """
name: mine
rules:
  - name: dw
    match: {op: conv2d, depthwise: true, kernel_size: 3}
    replace: {op: max_pool}
    absorb: [norm, act]
"""


MEANT_FOR = {
    "maxpool": "mobilenetv2_050", "maxpool-keepnorm": "mobilenetv2_050", "avgpool": "mobilenetv2_050",
    "identity": "mobilenetv2_050", "shift": "mobilenetv2_050", "dw-hybrid": "mobilenetv2_050",
    "dw-hybrid-keepnorm": "mobilenetv2_050", "r50-max": "resnet26", "r50-hybrid": "resnet26",
    "bottleneck-max": "resnet26", "bottleneck-hybrid": "resnet26", "basic-max": "resnet18",
    "basic-max-last": "resnet18", "vit-max": "vit_tiny_patch16_224", "vit-pool": "vit_tiny_patch16_224",
}
"""The model family each built-in rule file is written for (a tiny member of it); a new built-in needs an entry."""


def test_builtin_rules_are_listed_and_valid() -> None:
    names = {info.name: info for info in list_rules()}
    assert set(names) == set(MEANT_FOR), "every built-in rule file needs a model in MEANT_FOR"
    assert all(info.description for info in names.values())
    hybrid = load_rules("r50-hybrid").ruleset.rules
    assert [r.match.stride for r in hybrid] == [[1], [2]]
    assert isinstance(hybrid[1].replace, SequenceSpec)
    assert [s.op for s in hybrid[1].replace.steps] == ["avg_pool", "keep"]


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_rule_file_validates_and_applies_to_its_model(name: str) -> None:
    """Each built-in validates (its listing agrees with it) and, previewed on a model it is meant for, replaces at
    least one layer with every one of its rules (each op is built and shape-checked)."""
    import timm

    from pfconvert import preview

    loaded = load_rules(name)
    info = next(i for i in list_rules() if i.name == name)
    assert loaded.name == name == info.name and len(loaded.ruleset.rules) == info.num_rules
    assert loaded.text == builtin_text(name)
    model_name = MEANT_FOR[name]
    kwargs = {"img_size": 32} if model_name.startswith("vit") else {}
    model = timm.create_model(model_name, pretrained=False, num_classes=10, **kwargs).eval()
    done = preview(model, loaded, input_size=(3, 32, 32))
    assert done, f"{name} replaces nothing in {model_name}"
    assert {r.rule for r in done} == {r.name for r in loaded.ruleset.rules}


def test_a_broken_builtin_fails_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-ins go through the same validation as any file: a bad key in one is a one-line RuleError."""
    import pfconvert.rules.loading as loading

    text = builtin_text("maxpool").replace("depthwise: true", "depthwize: true")
    monkeypatch.setattr(loading, "builtin_text", lambda name: text)
    with pytest.raises(RuleError, match="built-in rule 'maxpool'.*match.depthwize.*unknown key"):
        load_rules("maxpool")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples" / "fashion_mnist" / "rules")
                                         .glob("*.yaml")), ids=lambda p: p.stem)
def test_planned_rules_shipped_with_the_example_are_valid(path: Path) -> None:
    """The planner's rules that the Fashion-MNIST example and benchmarks/peers.py use (written by `pfconvert plan`)."""
    rules = load_rules(str(path)).ruleset
    assert rules.name == "maxpool-planned" and rules.rules[0].match.stages


def test_rule_from_path_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    loaded = load_rules(path)
    assert loaded.name == "mine" and loaded.text == GOOD and len(loaded.sha256) == 64
    rule = loaded.ruleset.rules[0]
    assert rule.match.kernel_size == [3] and isinstance(rule.replace, MaxPoolSpec) and rule.absorb == ["norm", "act"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nrules: [{name: a, match: {kernal: 3}, replace: {op: max_pool}}]",
         "f.yaml: rule 'a' (rules[0]), field 'match.kernal': unknown key"),
        ("name: x\nrules: [{name: a, match: {}, replace: {op: maxpool}}]",
         "rule 'a' (rules[0]), field 'replace': unknown op 'maxpool'"),
        ("name: x\nrules: [{name: a, match: {}, replace: {op: max_pool, kernel_size: 0}}]",
         "field 'replace.kernel_size': must be a positive integer"),
        ("name: x\nrules: [{name: a, match: {kernel_size: -3}, replace: {op: identity}}]",
         "field 'match.kernel_size': must be positive integers"),
        ("name: x\nrules: [{name: a, match: {}, replace: {op: max_pool}, absorb: [act]}]", "'act' needs 'norm'"),
        ("name: x\nrules: [{name: a, match: {}, replace: {op: identity}}, {name: a, match: {}, replace: {op: identity}}]",
         "repeated: a"),
        ("name: x\nrules: [{name: a, match: {path_regex: '('}, replace: {op: identity}}]",
         "not a valid regular expression"),
        ("name: x\nrules: []", "field 'rules'"),
        ("rules: [oops", "f.yaml: malformed YAML at line"),
        ("- just a list", "must be a mapping"),
    ],
)
def test_bad_rule_text_is_a_one_line_error(text: str, expected: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text, source="f.yaml")
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_rule_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="unknown rule 'maxpol'.*pfconvert rules"):
        load_rules("maxpol")
    with pytest.raises(RuleError, match="rule file not found"):
        load_rules(tmp_path / "nope.yaml")
