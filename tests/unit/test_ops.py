"""Replacement ops on bare ``nn.Conv2d`` layers (no timm): geometry, exactness, the traps of conversion, and the
registry's invariants."""

from __future__ import annotations

import typing

import pytest
import torch
import torch.nn.functional as F
from helpers import DwBlock, MultiplierNet
from torch import nn

import pfconvert
from pfconvert.errors import ConversionError
from pfconvert.ops import ChannelRepeat, Count, build_replacement, describe_op, get_op, list_ops, op_names
from pfconvert.ops.identity import IdentitySpec, Subsample
from pfconvert.ops.pool import AvgPoolSpec, MaxPoolSpec
from pfconvert.ops.shift import Shift, ShiftSpec
from pfconvert.rules import parse_rules

MAX = MaxPoolSpec(op="max_pool")


def _dw(k: int | tuple[int, int] = 3, s: int = 1, p: int | tuple[int, int] = 1, d: int = 1, c: int = 4) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, s, p, dilation=d, groups=c)


@pytest.mark.parametrize(("conv", "size"), [
    (_dw(3, 1, 1), 9), (_dw(3, 2, 1), 9), (_dw(5, 2, 2), 10), (_dw((1, 5), 1, (0, 2)), 8), (_dw((3, 1), 2, (1, 0)), 11),
    (_dw(3, 1, 2, d=2), 9), (_dw(7, 1, 3), 7),
])
def test_max_pool_keeps_the_geometry_of_the_conv(conv: nn.Conv2d, size: int) -> None:
    x = torch.randn(2, 4, size, size)
    op = build_replacement(MAX, conv, "conv")
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    padded = F.pad(x, (p[1], p[1], p[0], p[0]), value=float("-inf"))
    assert torch.equal(op(x), F.max_pool2d(padded, k, s, 0, d))
    assert op(x).shape == conv(x).shape


def test_max_pool_pads_with_minus_infinity() -> None:
    x = -torch.rand(1, 2, 5, 5) - 1.0  # all negative: zero padding would leak 0 into border maxima
    ref = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Conv2d(2, 2, 3, padding=2, dilation=2, groups=2))
    converted, _ = pfconvert.convert(net, "maxpool", input_size=(2, 5, 5))
    assert torch.equal(converted[0](x), ref)
    assert converted[1](x).max() < 0 and converted[1](x).shape == x.shape


def test_avg_pool_refuses_what_it_cannot_reproduce() -> None:
    with pytest.raises(ConversionError, match="dilated.*avg-pool has no dilation"):
        build_replacement(AvgPoolSpec(op="avg_pool"), _dw(3, 1, 2, d=2), "c")
    asymmetric = nn.Conv2d(4, 4, 4, padding="same", groups=4)  # even window: torch puts the odd pixel right/bottom
    with pytest.raises(ConversionError, match="asymmetric padding"):
        build_replacement(AvgPoolSpec(op="avg_pool"), asymmetric, "c")
    assert isinstance(build_replacement(MAX, asymmetric, "c")[0], nn.ConstantPad2d)  # max-pool: an explicit -inf pad


def test_identity_picks_the_window_centres() -> None:
    conv = _dw(3, 2, 1)
    op = build_replacement(IdentitySpec(op="identity"), conv, "c")
    x = torch.randn(1, 4, 8, 8)
    assert isinstance(op, Subsample) and torch.equal(op(x), x[:, :, ::2, ::2]) and op(x).shape == conv(x).shape
    assert isinstance(build_replacement(IdentitySpec(op="identity"), _dw(), "c"), nn.Identity)


def test_shift_moves_channel_groups() -> None:
    x = torch.arange(9 * 16, dtype=torch.float32).reshape(1, 9, 4, 4)
    y = Shift(9)(x)
    assert torch.equal(y[:, 0], x[:, 0])  # centre group stays
    assert torch.equal(y[0, 1, 1:], x[0, 1, :3]) and torch.equal(y[0, 1, 0], torch.zeros(4))  # moved down, zero fill
    with pytest.raises(ConversionError, match="3x3 undilated layers only"):
        build_replacement(ShiftSpec(op="shift"), _dw(5, 1, 2), "c")


def test_depth_multiplier_is_repeated_channels() -> None:
    net = MultiplierNet().eval()
    converted, record = pfconvert.convert(net, "maxpool", input_size=(4, 8, 8))
    op = converted.conv
    assert isinstance(op, nn.Sequential) and isinstance(op[0], nn.MaxPool2d) and isinstance(op[1], ChannelRepeat)
    x = torch.randn(1, 4, 8, 8)
    pooled = F.max_pool2d(x, 3, 2, 1)
    assert torch.equal(op(x)[:, 0], pooled[:, 0]) and torch.equal(op(x)[:, 1], pooled[:, 0])
    assert record.replacements[0].absorbed == ["bn"]


def test_channel_changing_regular_conv_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))
    rule = parse_rules("name: r\nrules: [{name: all3x3, match: {kernel_size: 3}, replace: {op: max_pool}}]")
    with pytest.raises(ConversionError, match=r"layer '0': maps 4 to 8 channels.*same_channels: true"):
        pfconvert.convert(net, rule, input_size=(4, 8, 8))


def test_inplace_activation_after_identity_does_not_corrupt_the_residual() -> None:
    block = DwBlock().eval()
    rule = parse_rules("name: r\nrules: [{name: dw, match: {depthwise: true}, replace: {op: identity}, allow_empty_branch: true}]")
    converted, _ = pfconvert.convert(block, rule, input_size=(4, 6, 6))
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(converted(x.clone()), x + torch.relu(x))
    assert converted.act.inplace is False


def test_a_strided_identity_in_a_sequence_also_hands_its_input_on() -> None:
    rule = parse_rules("name: r\nrules: [{name: dw, match: {depthwise: true}, replace: {op: sequence, steps: "
                       "[{op: identity}]}}, ]")
    assert rule.ruleset.rules[0].replace.aliases_input()
    two = parse_rules("name: r\nrules: [{name: dw, match: {depthwise: true}, replace: {op: sequence, steps: "
                      "[{op: identity}, {op: max_pool}]}}]")
    assert not two.ruleset.rules[0].replace.aliases_input()


def test_descriptions() -> None:
    assert describe_op(build_replacement(MAX, _dw(3, 2, 1), "c")) == "MaxPool2d 3x3 s2 p1"
    assert describe_op(build_replacement(MAX, _dw((1, 5), 1, (0, 2)), "c")) == "MaxPool2d 1x5 s1 p0x2"
    assert describe_op(nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(4, 4, 3))) == "AvgPool2d 2x2 s2 p0 -> Conv2d 4->4 k3 s1"


def test_every_registered_op_is_complete() -> None:
    """The registry is the only place an op is declared: its tag, sites, counting and docs come from there."""
    assert {"max_pool", "avg_pool", "identity", "shift", "sequence", "keep", "eff_max", "pool", "lp_pool"} <= set(
        op_names())
    counted: dict[str, Count] = {}
    for op in list_ops():
        assert typing.get_args(op.spec.model_fields["op"].annotation) == (op.name,)
        assert get_op(op.name) is op and op.sites and op.summary and op.module.startswith("pfconvert.ops.")
        assert op.top_level or op.in_sequence
        assert op.version >= 1 and all(1 <= v < op.version and callable(f) for v, f in op.migrations.items())
        for aten, kind in op.counts.items():
            assert counted.setdefault(aten, kind) is kind, f"{aten} counted two ways"
        for name, field in op.spec.model_fields.items():
            assert name == "op" or field.description, f"{op.name}.{name} has no description for the docs"
    assert counted["aten::max_pool2d"] is Count.POOL_WINDOW
