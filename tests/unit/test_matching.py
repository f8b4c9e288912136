"""Dataflow tracing and rule matching on small hand-built modules (no timm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pfconvert.graph import block_path, find_matches, stage_block, trace_dataflow
from pfconvert.rules import parse_rules


class Block(nn.Module):
    """conv1 1x1 -> conv2 3x3 (stride s) + bn2 + relu -> conv3 1x1, a residual around it."""

    def __init__(self, c: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.down = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x) + self.conv3(self.act2(self.bn2(self.conv2(self.conv1(x)))))


class Net(nn.Module):
    """Two stages (``layer1``, ``layer2``) of two blocks; ``layer2.0`` is strided and ``layer2.1`` depthwise."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.layer1 = nn.Sequential(Block(c), Block(c))
        self.layer2 = nn.Sequential(Block(c, stride=2), Block(c, groups=c))
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


SIZE = (3, 16, 16)


def _matched(match: str, **kw: object) -> list[str]:
    rules = parse_rules(f"name: t\nrules: [{{name: r, match: {match}, replace: {{op: max_pool}}}}]")
    model = Net()
    return [m.site.path for m in find_matches(model, rules.ruleset, trace_dataflow(model, SIZE))]


def test_meta_tracing_sees_what_a_real_forward_sees() -> None:
    model = Net().eval()
    meta, real = trace_dataflow(model, SIZE), trace_dataflow(model, SIZE, meta=False)
    keys = [[(c.path, c.input_shape, c.output_shape, c.input_id == c.output_id) for c in f.calls] for f in (meta, real)]
    assert keys[0] == keys[1] and meta.output_shapes == real.output_shapes == [(1, 5)]
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model's own tensors are untouched


def test_consumers_follow_the_dataflow() -> None:
    flow = trace_dataflow(Net(), SIZE)
    conv2 = flow.by_path["layer1.0.conv2"]
    assert [c.path for c in flow.consumers(conv2)] == ["layer1.0.bn2"]
    bn2 = flow.by_path["layer1.0.bn2"]
    assert [c.path for c in flow.consumers(bn2)] == ["layer1.0.act2"]  # in place: its output is its input
    assert flow.by_path["layer1.0.act2"].output_id == flow.by_path["layer1.0.act2"].input_id


@pytest.mark.parametrize(("match", "expected"), [
    ("{kernel_size: 3, same_channels: true}",
     ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, depthwise: false, same_channels: true}", ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2"]),
    ("{depthwise: true}", ["layer2.1.conv2"]),
    ("{kernel_size: 3, stride: 2}", ["layer2.0.conv2"]),
    ("{kernel_size: 3, same_channels: true, stages: [1]}", ["layer2.0.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, blocks: [-1]}", ["layer1.1.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, stages: -1}", ["layer2.0.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, stages: [-2]}", ["layer1.0.conv2", "layer1.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, stages: [-3]}", []),
    ("{kernel_size: 3, same_channels: true, path_regex: '^layer2\\.0'}", ["layer2.0.conv2"]),
    ("{kernel_size: 3, same_channels: true, path: 'layer1.*'}", ["layer1.0.conv2", "layer1.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, exclude: ['layer1.*']}", ["layer2.0.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, same_channels: true, parent: Block, every_nth: 2, offset: 1}",
     ["layer1.1.conv2", "layer2.1.conv2"]),
    ("{kernel_size: 3, same_channels: false}", ["stem"]),
    ("{kernel_size: 5}", []),
])
def test_predicates(match: str, expected: list[str]) -> None:
    assert _matched(match) == expected


@pytest.mark.parametrize(("groups", "expected"), [
    ("dense", ["layer1.0.conv2", "layer2.0.conv2"]),
    ("grouped", ["layer1.1.conv2"]),
    ("depthwise", ["layer2.1.conv2"]),
    ("any", ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer2.1.conv2"]),
])
def test_groups_tells_dense_grouped_and_depthwise_convs_apart(groups: str, expected: list[str]) -> None:
    model = Net()
    model.layer1[1] = Block(8, groups=2)  # a ResNeXt-style grouped 3x3
    rules = parse_rules(f"name: t\nrules: [{{name: r, match: {{kernel_size: 3, same_channels: true, groups: {groups}}}, "
                        "replace: {op: max_pool}}]")
    assert [m.site.path for m in find_matches(model, rules.ruleset, trace_dataflow(model, SIZE))] == expected


def test_first_rule_wins_and_absorbs_its_norm_and_activation() -> None:
    rules = parse_rules("""
name: t
rules:
  - {name: strided, match: {stride: 2}, replace: {op: avg_pool}, absorb: [norm, act]}
  - {name: rest, match: {kernel_size: 3, same_channels: true}, replace: {op: max_pool}, absorb: [norm]}
""")
    model = Net()
    matches = find_matches(model, rules.ruleset, trace_dataflow(model, SIZE))
    by = {m.site.path: m for m in matches}
    assert by["layer2.0.conv2"].rule.name == "strided" and by["layer1.0.conv2"].rule.name == "rest"
    assert by["layer2.0.conv2"].absorbed == ["layer2.0.bn2", "layer2.0.act2"]
    assert by["layer1.0.conv2"].absorbed == ["layer1.0.bn2"]


@pytest.mark.parametrize(("path", "expected", "block"), [
    ("layer1.0.conv2", (0, 0), "layer1.0"), ("layer3.2.conv1", (2, 2), "layer3.2"),
    ("stages.2.blocks.1.conv_dw", (2, 1), "stages.2.blocks.1"), ("blocks.2.1.conv_dw", (2, 1), "blocks.2.1"),
    ("blocks.5.attn", (0, 5), "blocks.5"), ("stem.conv", (None, None), None),
    ("s3.b2.conv2.conv", (2, 1), "s3.b2"),  # RegNet: 1-based
])
def test_stage_and_block_from_the_path(path: str, expected: tuple[int | None, int | None], block: str | None) -> None:
    assert stage_block(path)[:2] == expected and block_path(path) == block
