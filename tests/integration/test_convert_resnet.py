"""The paper's ResNet-50 redesigns come out exactly (params, structure, MACs)."""

from __future__ import annotations

import pytest
from helpers import meta_model
from torch import nn

import pfconvert
from pfconvert.report.counting import count_macs
from pfconvert.rules import parse_rules


def test_r50_max_is_the_papers_architecture() -> None:
    model, record = pfconvert.convert(meta_model("resnet50"), "r50-max")
    assert record.params_before == 25_557_032
    assert record.params_after == 14_232_232  # paper: 14.2M
    assert len(record.replacements) == 16
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, block in enumerate(stage):
            stride = 2 if i == 0 and stage is not model.layer1 else 1
            assert isinstance(block.conv2, nn.MaxPool2d)
            assert (block.conv2.kernel_size, block.conv2.stride, block.conv2.padding) == (3, stride, 1)
            assert isinstance(block.bn2, nn.Identity) and isinstance(block.act2, nn.Identity)
            assert isinstance(block.conv1, nn.Conv2d) and isinstance(block.act3, nn.ReLU)
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.kernel_size == (7, 7)  # stem untouched


def test_r50_hybrid_is_the_papers_architecture() -> None:
    model, record = pfconvert.convert(meta_model("resnet50"), "r50-hybrid")
    assert record.params_after == 17_330_600  # paper: 17.3M
    assert record.counts_by_rule() == {"stride1-bottleneck-to-maxpool": 13, "stride2-bottleneck-to-avgpool-conv": 3}
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0].conv2
        assert isinstance(first, nn.Sequential)
        assert isinstance(first[0], nn.AvgPool2d) and (first[0].kernel_size, first[0].stride) == (2, 2)
        assert isinstance(first[1], nn.Conv2d) and first[1].stride == (1, 1) and first[1].kernel_size == (3, 3)
        assert isinstance(stage[0].bn2, nn.BatchNorm2d) and isinstance(stage[0].act2, nn.ReLU)
    assert isinstance(model.layer1[0].conv2, nn.MaxPool2d)  # stride-1 first block with projection


@pytest.mark.slow
def test_resnet50_macs_match_the_paper() -> None:
    original = count_macs(pfconvert.create_model("resnet50"))
    converted = count_macs(pfconvert.convert("resnet50", "r50-max")[0])
    assert round(original.macs / 1e9, 1) == 4.1
    assert round(converted.macs / 1e9, 1) == 2.3  # paper's table rounds 2.24 G (conv+fc only) to 2.2
    assert converted.pool_ops > original.pool_ops > 0


@pytest.mark.parametrize(
    ("match", "count"),
    [("stages: [3]", 3), ("blocks: [0]", 4), ("blocks: [-1]", 4), ("every_nth: 2", 8), ("every_nth: 2, offset: 1", 8),
     ("path: 'layer2.*'", 4), ("exclude: ['layer1.*', 'layer2.*']", 9), ("path_regex: 'layer[34]\\.0\\.'", 2)],
)
def test_selection_fields(match: str, count: int) -> None:
    text = f"""
name: sel
rules:
  - name: pick
    match: {{op: conv2d, depthwise: false, kernel_size: 3, parent: Bottleneck, {match}}}
    replace: {{op: max_pool}}
    absorb: [norm, act]
"""
    _, record = pfconvert.convert(meta_model("resnet50"), parse_rules(text))
    assert len(record.replacements) == count


def test_every_nth_picks_alternate_layers() -> None:
    text = "name: s\nrules: [{name: p, match: {parent: Bottleneck, kernel_size: 3, every_nth: 2, offset: 1}, " \
           "replace: {op: max_pool}}]"
    _, record = pfconvert.convert(meta_model("resnet50"), parse_rules(text))
    assert [r.path for r in record.replacements][:2] == ["layer1.1.conv2", "layer2.0.conv2"]
