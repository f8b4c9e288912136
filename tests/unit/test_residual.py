"""Residual branches from the traced dataflow: which convs lie in one, their roles, and the empty-branch guard."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import pfconvert
from pfconvert.errors import RuleError
from pfconvert.graph import trace_dataflow
from pfconvert.graph.residual import ROLES, branch_info, residual_branches
from pfconvert.rules import parse_rules
from pfconvert.rules.schema import MatchSpec

SIZE = (8, 12, 12)


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class Basic(nn.Module):
    """Two 3x3 convs; ``x += shortcut`` in place, as timm's BasicBlock."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = _cbr(c, c, 3)
        self.conv2, self.bn2, _ = _cbr(c, c, 3)
        self.act2 = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        x += shortcut
        return self.act2(x)


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()


class Bottle(nn.Module):
    """1x1 -> k x k (grouped when asked, SE after it) -> 1x1, projection shortcut when the stride is 2."""

    def __init__(self, c: int = 8, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_cbr(c, 16, 1))
        self.conv2 = nn.Sequential(*_cbr(16, 16, 3, stride, groups))
        self.se = SE(16)
        self.conv3 = nn.Sequential(*_cbr(16, c, 1)[:2])
        self.down = nn.Conv2d(c, c, 1, stride) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.down is None else self.down(x)
        return torch.relu(self.conv3(self.se(self.conv2(self.conv1(x)))) + shortcut)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(8, 8, 3, 1, 1)
        self.basic = Basic()
        self.bottle = Bottle()
        self.down = Bottle(stride=2, groups=4)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.bottle(self.basic(self.stem(x))))
        return self.head(x.mean((2, 3)))


def _info(flow, path: str):
    return branch_info(flow, flow.by_path[path])


def test_branches_and_roles_of_basic_and_bottleneck_blocks() -> None:
    flow = trace_dataflow(Net(), SIZE)
    assert not _info(flow, "stem").residual
    assert _info(flow, "basic.conv1").roles == {"first"} and _info(flow, "basic.conv2").roles == {"last"}
    assert _info(flow, "bottle.conv2.0").roles == {"spatial", "only"}  # the SE's 1x1 convs on 1x1 maps do not count
    assert _info(flow, "down.conv2.0").roles == {"spatial", "only"}
    assert _info(flow, "down.down").residual  # a projection shortcut is the other side of the join
    assert not _info(flow, "head").residual
    assert [b.name() for b in residual_branches(flow) if b.calls] == ["basic", "bottle", "down", "down"]
    assert set(ROLES) == set(MatchSpec.model_fields["branch_role"].annotation.__args__[0].__args__[0].__args__)


def test_meta_and_real_forwards_find_the_same_branches() -> None:
    net = Net()
    meta, real = trace_dataflow(net, SIZE), trace_dataflow(net, SIZE, meta=False)
    assert [[c.path for c in b.calls] for b in residual_branches(meta)] == \
        [[c.path for c in b.calls] for b in residual_branches(real)]


def test_an_addition_of_unrelated_tensors_is_no_residual() -> None:
    class PosEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, 1, 1)
            self.pos = nn.Parameter(torch.zeros(1, 8, 12, 12))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.pos

    flow = trace_dataflow(PosEmbed(), SIZE)
    assert flow.graph.joins and residual_branches(flow) == []


def _rule(match: str, extra: str = "") -> pfconvert.rules.LoadedRules:
    return parse_rules(f"name: t\nrules: [{{name: r, match: {match}, replace: {{op: max_pool}}, "
                       f"absorb: [norm, act]{extra}}}]")


def test_predicates_pick_by_role_and_grouping() -> None:
    def paths(rule: pfconvert.rules.LoadedRules) -> list[str]:
        return [r.path for r in pfconvert.preview(Net(), rule, SIZE)]

    assert paths(_rule("{branch_role: first, same_channels: true}")) == ["basic.conv1"]
    assert paths(_rule("{branch_role: spatial, groups: dense}")) == ["bottle.conv2.0"]
    assert paths(_rule("{branch_role: spatial, groups: [dense, grouped]}")) == ["bottle.conv2.0", "down.conv2.0"]
    assert paths(_rule("{kernel_size: 3, residual: false}")) == ["stem"]


def test_a_rule_that_empties_a_branch_is_refused_unless_it_says_so() -> None:
    every_3x3 = "{kernel_size: 3, groups: dense, same_channels: true, residual: true, stride: 1}"
    with pytest.raises(RuleError, match="residual branch of 'basic' with no trainable layer .*basic.conv1, "
                                        "basic.conv2 replaced.*allow_empty_branch: true"):
        pfconvert.convert(Net(), _rule(every_3x3), input_size=SIZE)
    with pytest.raises(RuleError, match="residual branch of 'basic'"):
        pfconvert.preview(Net(), _rule(every_3x3), SIZE)
    model, record = pfconvert.convert(Net(), _rule(every_3x3, ", allow_empty_branch: true"), input_size=SIZE)
    assert [r.path for r in record.replacements] == ["basic.conv1", "basic.conv2", "bottle.conv2.0"]


def test_a_replacement_that_keeps_a_conv_does_not_empty_its_branch() -> None:
    hybrid = parse_rules("name: t\nrules: [{name: r, match: {kernel_size: 3, residual: true, groups: dense}, replace: "
                         "{op: sequence, steps: [{op: avg_pool, kernel_size: 3, stride: 1, padding: 1}, {op: keep}]}}]")
    _, record = pfconvert.convert(Net(), hybrid, input_size=SIZE)
    assert [r.path for r in record.replacements] == ["basic.conv1", "basic.conv2", "bottle.conv2.0"]


@pytest.mark.slow
def test_bottleneck_rules_are_the_papers_r50_rules_on_resnet50() -> None:
    model = timm.create_model("resnet50")
    for family_rule, r50_rule, params in (("bottleneck-max", "r50-max", 14_230_000),
                                          ("bottleneck-hybrid", "r50-hybrid", 17_330_000)):
        _, record = pfconvert.convert(model, family_rule, input_size=(3, 64, 64))
        _, reference = pfconvert.convert(model, r50_rule, input_size=(3, 64, 64))
        assert [(r.path, r.new) for r in record.replacements] == [(r.path, r.new) for r in reference.replacements]
        assert record.params_after == reference.params_after and round(record.params_after, -4) == params


def test_basic_max_keeps_a_trainable_conv_in_every_resnet18_branch() -> None:
    model = timm.create_model("resnet18")
    _, record = pfconvert.convert(model, "basic-max", input_size=(3, 64, 64))
    assert [r.path for r in record.replacements] == ["layer1.0.conv1", "layer1.1.conv1", "layer2.1.conv1",
                                                     "layer3.1.conv1", "layer4.1.conv1"]
    dense = _rule("{kernel_size: 3, groups: dense, same_channels: true, stride: 1}")
    with pytest.raises(RuleError, match="residual branch of 'layer1.0'"):
        pfconvert.convert(model, dense, input_size=(3, 64, 64))


def test_basic_max_last_pools_the_second_conv_of_selective_kernel_blocks() -> None:
    model = timm.create_model("skresnet18")  # SK paths split the input: each path conv changes channels (32 -> 64)
    with pytest.raises(RuleError, match="rule 'basic-max' matched no layer of skresnet18"):
        pfconvert.convert(model, "basic-max", input_size=(3, 64, 64))
    converted, record = pfconvert.convert(model, "basic-max-last", input_size=(3, 64, 64))
    assert [r.path for r in record.replacements] == [f"layer{s}.{b}.conv2.conv" for s in range(1, 5) for b in (0, 1)]
    assert all(type(converted.get_submodule(r.path)).__name__ != "Conv2d" for r in record.replacements)
    assert converted(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_bottleneck_hybrid_keeps_a_stride_2_convs_size_on_odd_maps() -> None:
    model, record = pfconvert.convert(Bottle(stride=2), "bottleneck-hybrid", input_size=(8, 11, 11))
    assert [r.path for r in record.replacements] == ["conv2.0"]
    assert model(torch.randn(1, 8, 11, 11)).shape == (1, 8, 6, 6)


def test_a_linear_on_the_maps_tokens_is_pointwise() -> None:
    class SpatialReduction(nn.Module):  # PVT-v2's attention: q from every token, k/v from a strided conv's tokens
        def __init__(self) -> None:
            super().__init__()
            self.q, self.kv, self.sr = nn.Linear(8, 8), nn.Linear(8, 16), nn.Conv2d(8, 8, 2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            k, v = self.kv(self.sr(x).flatten(2).transpose(1, 2)).chunk(2, -1)
            attn = (self.q(tokens) @ k.transpose(1, 2)).softmax(-1) @ v
            return x + attn.transpose(1, 2).reshape(b, c, h, w)

    flow = trace_dataflow(SpatialReduction(), SIZE)
    assert _info(flow, "sr").roles == {"spatial", "only"}
