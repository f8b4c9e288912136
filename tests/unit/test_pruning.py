"""Channel pruning after the rules: recorded as channel counts, replayed by load() with no pickles, the original
(the teacher) rebuilt exactly."""

from __future__ import annotations

import pytest
import timm
import torch

import pfconvert
from pfconvert.conversion.artifact import build_original, load_artifact
from pfconvert.conversion.pruning import apply_shapes, prune_channels, with_prune
from pfconvert.conversion.shrinking import shrinkable_layers, with_shrink
from pfconvert.errors import ArtifactError
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
