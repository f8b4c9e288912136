"""Channel pruning after the rules: recorded as channel counts, replayed by load() with no pickles, the original
(the teacher) rebuilt exactly."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import timm
import torch

import pfconvert
from pfconvert.conversion.artifact import build_original, load_artifact
from pfconvert.conversion.pruning import Pruning, apply_shapes, prune_channels, with_prune
from pfconvert.conversion.shrinking import shrinkable_layers, with_shrink
from pfconvert.errors import ArtifactError, PfconvertError, RuleError
from pfconvert.rules import load_rules, parse_rules

SIZE = (3, 32, 32)


def test_channel_counts_are_rounded_and_recorded_as_data() -> None:
    model = timm.create_model("resnet18", num_classes=10).eval()
    record, removed = prune_channels(model, 0.3, SIZE)
    convs = [s for s in record.shapes.values() if "out_channels" in s["attrs"]]
    assert convs and all(s["attrs"]["out_channels"] % 8 == 0 for s in convs)
    assert record.shapes["conv1"]["attrs"]["out_channels"] < 64 and "fc" in record.shapes  # the head's inputs shrink
    assert record.shapes["fc"]["attrs"]["out_features"] == 10  # ... but never its classes
    assert removed["conv1.weight"].shape == (64, 3, 7, 7)  # the state before pruning
    fresh = timm.create_model("resnet18", num_classes=10)
    apply_shapes(fresh, record.to_dict())
    fresh.load_state_dict(model.state_dict())  # strict: every shape matches
    with pytest.raises(ArtifactError, match="layer 'nope'"):
        apply_shapes(fresh, {"ratio": 0.3, "shapes": {"nope": {"attrs": {}, "tensors": {}}}})


@pytest.mark.slow
def test_a_pruned_and_shrunk_artifact_loads_and_rebuilds_its_teacher(tmp_path) -> None:
    probe = timm.create_model("resnet18", num_classes=10)
    rules = with_prune(with_shrink(load_rules("basic-max"), shrinkable_layers(probe, SIZE)), 0.25)
    original, converted, record = pfconvert.convert_pair("resnet18", rules, input_size=SIZE, num_classes=10)
    assert record.pruning is not None and record.params_after < record.params_before
    pfconvert.save(converted, record, tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    assert art.recipe.pruning is not None and art.recipe.pruning.to_dict() == record.pruning  # a typed Pruning
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(art.model.eval()(x), converted.eval()(x))
        assert torch.equal(build_original(art.recipe, tmp_path / "a").eval()(x), original.eval()(x))


def test_a_rule_file_may_only_prune() -> None:
    rules = parse_rules("name: p\nprune: {ratio: 0.5}\nrules: []")
    model, record = pfconvert.convert(timm.create_model("resnet18", num_classes=10), rules, input_size=SIZE)
    assert record.replacements == [] and record.pruning["ratio"] == 0.5 and model.conv1.out_channels == 32


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _out_channels(record) -> dict[str, int]:
    return {path: s["attrs"]["out_channels"] for path, s in record.shapes.items() if "out_channels" in s["attrs"]}


@pytest.mark.parametrize("importance,global_pruning", [("group-norm", False), ("group-norm", True), ("l1", True)])
def test_group_norm_and_global_pruning_reach_the_ratio_in_multiples_of_round_to(importance, global_pruning) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    full = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    with torch.no_grad():  # layer4.0.conv1: 32 strong channels, 480 weak ones (uniform pruning keeps 60%, 288)
        model.layer4[0].conv1.weight[32:] *= 0.01
        model.layer4[0].bn1.weight[32:] *= 0.01
    before = _params(model)
    record, _ = prune_channels(model, 0.4, SIZE, importance=importance, global_pruning=global_pruning)
    assert 0.25 < _params(model) / before < 0.5  # ~(1 - 0.4)^2: a conv loses 40% of its inputs and of its outputs
    counts = _out_channels(record)
    assert counts and all(c % 8 == 0 for c in counts.values())
    if global_pruning:  # one global ratio: per-layer shares differ, none above the cap (0.8; rounding may take 8 more)
        assert 96 <= counts["layer4.0.conv1"] < 200  # its weak channels go first, down to the cap (0.8 of 512)
        assert all(c >= full[path] * 0.2 - 8 for path, c in counts.items())
        assert sum(counts.values()) > 0.6 * sum(full[path] for path in counts)  # the other layers lose less
        assert record.global_pruning and record.max_ratio == 0.8 and "global" in record.method
    else:
        assert all(abs(1 - c / full[path] - 0.4) < 0.1 for path, c in counts.items())
    assert record.importance == importance
    assert model(torch.randn(1, *SIZE)).shape == (1, 10)


def test_group_norm_keeps_other_channels_than_l1() -> None:
    torch.manual_seed(0)
    base = timm.create_model("mobilenetv2_050", num_classes=10).eval()
    l1, group = copy.deepcopy(base), copy.deepcopy(base)
    a, _ = prune_channels(l1, 0.5, SIZE)
    b, _ = prune_channels(group, 0.5, SIZE, importance="group-norm")
    assert a.shapes == b.shapes  # the same counts (uniform) ...
    one, other = l1.state_dict(), group.state_dict()
    differ = [k for k in one if one[k].is_floating_point() and not torch.equal(one[k], other[k])]
    assert len(differ) > 10  # ... but other channels kept
    c, _ = prune_channels(copy.deepcopy(base), 0.5, SIZE, importance="group-norm", global_pruning=True)
    assert c.shapes != b.shapes  # global: other counts


def test_an_l1_record_and_rule_file_read_as_before_methods_were_choosable() -> None:
    torch.manual_seed(0)
    record, _ = prune_channels(timm.create_model("resnet18", num_classes=10).eval(), 0.3, SIZE)
    text = json.dumps(record.to_dict(), indent=2)
    # the sha256 of the same record written by pfconvert before this change (main at 94b2f07)
    assert hashlib.sha256(text.encode()).hexdigest() == \
        "2fc84ef1d7fcfe16de0152f864576b736541eeb83f8dddbc5cff6b29776ceee5"
    assert json.dumps(Pruning.from_dict(json.loads(text)).to_dict(), indent=2) == text
    assert with_prune(None, 0.5).text == ("name: prune+prune0.5\ndescription: Channel pruning only (written by "
                                          "pfconvert)\nprune:\n  ratio: 0.5\n  round_to: 8\nrules: []\n")
    rules = with_prune(None, 0.5, importance="group-norm", global_pruning=True)
    assert rules.name == "prune+prune0.5-group-norm-global"
    assert rules.ruleset.prune.importance == "group-norm" and rules.ruleset.prune.global_pruning


@pytest.mark.parametrize("kwargs,message", [({"importance": "taylor"}, "unknown pruning importance 'taylor'"),
                                            ({"max_ratio": 0.9}, "caps global pruning only"),
                                            ({"global_pruning": True, "max_ratio": 0.2}, "below the pruning ratio")])
def test_a_bad_method_is_one_line_error(kwargs, message) -> None:
    with pytest.raises(PfconvertError, match=message):
        prune_channels(timm.create_model("test_resnet.r160_in1k", num_classes=10), 0.3, SIZE, **kwargs)
    with pytest.raises(RuleError, match="prune"):
        parse_rules("name: p\nprune: {ratio: 0.3, importance: taylor}\nrules: []")


@pytest.mark.slow
def test_a_global_group_norm_artifact_saves_and_loads_strictly(tmp_path) -> None:
    rules = parse_rules("name: p\nprune: {ratio: 0.4, importance: group-norm, global_pruning: true}\nrules: []")
    original, converted, record = pfconvert.convert_pair("resnet18", rules, input_size=SIZE, num_classes=10)
    assert record.pruning["importance"] == "group-norm" and record.pruning["global_pruning"]
    assert len(set(_out_channels(Pruning.from_dict(record.pruning)).values())) > 4  # non-uniform shapes
    pfconvert.save(converted, record, tmp_path / "a")
    art = load_artifact(tmp_path / "a")  # strict load into apply_shapes' rebuilt model
    assert art.recipe.pruning is not None and art.recipe.pruning.to_dict() == record.pruning
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(art.model.eval()(x), converted.eval()(x))
        assert torch.equal(build_original(art.recipe, tmp_path / "a").eval()(x), original.eval()(x))
