"""Depthwise-conv rules on inverted-bottleneck nets, and the correctness traps of conversion."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import DwBlock, MultiplierNet, tiny_input
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

import pfconvert
from pfconvert.errors import ConversionError, RuleError
from pfconvert.ops import ChannelRepeat
from pfconvert.ops.identity import Subsample
from pfconvert.ops.shift import Shift
from pfconvert.rules import parse_rules

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def mnv2() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("mobilenetv2_050", num_classes=10).eval()


def _dw_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1}


def test_maxpool_replaces_every_depthwise_conv_with_its_bn(mnv2: nn.Module) -> None:
    before = _dw_convs(mnv2)
    model, record = pfconvert.convert(mnv2, "maxpool", input_size=SIZE)
    assert [r.path for r in record.replacements] == list(before)
    for rep in record.replacements:
        pool = model.get_submodule(rep.path)
        conv = before[rep.path]
        assert isinstance(pool, nn.MaxPool2d)
        assert (pool.kernel_size, pool.stride, pool.padding) == (conv.kernel_size[0], conv.stride[0], conv.padding[0])
        assert len(rep.absorbed) == 1 and isinstance(model.get_submodule(rep.absorbed[0]), nn.Identity)
    assert not _dw_convs(model)
    assert _dw_convs(mnv2), "the caller's model is not modified (a deep copy is converted)"


def test_converted_model_keeps_class_methods_and_untouched_weights(mnv2: nn.Module) -> None:
    model, record = pfconvert.convert(mnv2, "maxpool", input_size=SIZE)
    assert type(model) is type(mnv2) and model.pretrained_cfg == mnv2.pretrained_cfg
    old, new = mnv2.state_dict(), model.state_dict()
    removed = {k for k in old if k not in new}
    assert removed == set(record.removed_state)
    assert all(k.rsplit(".", 1)[0] in {p for r in record.replacements for p in [r.path, *r.absorbed]} for k in removed)
    for key, value in new.items():
        assert torch.equal(value, old[key]), key
    x = tiny_input(SIZE)
    with torch.no_grad():
        assert torch.equal(model.conv_stem(x), mnv2.conv_stem(x))  # untouched parts compute the same
        feats = torch.randn(2, model.num_features, 2, 2)
        assert torch.equal(model.forward_head(feats), mnv2.forward_head(feats))
        assert model.forward_features(x).shape == mnv2.forward_features(x).shape
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)


def test_train_mode_model_converts_and_trains(mnv2: nn.Module) -> None:
    train_model = timm.create_model("mobilenetv2_050", num_classes=10).train()
    model, _ = pfconvert.convert(train_model, "maxpool", input_size=SIZE)
    assert model.training and all(m.training for m in model.modules())
    stats = model.blocks[1][0].bn1.running_mean.clone()
    out = model(tiny_input(SIZE))
    out.sum().backward()
    assert out.shape == (2, 10)
    assert model.conv_stem.weight.grad is not None and model.blocks[1][0].conv_pw.weight.grad.abs().sum() > 0
    assert not torch.equal(stats, model.blocks[1][0].bn1.running_mean)  # BN still trains
    eval_model, _ = pfconvert.convert(mnv2, "maxpool", input_size=SIZE)
    assert not any(m.training for m in eval_model.modules())


def test_avgpool_identity_and_shift_variants(mnv2: nn.Module) -> None:
    avg, _ = pfconvert.convert(mnv2, "avgpool", input_size=SIZE)
    pool = avg.blocks[1][0].conv_dw
    assert isinstance(pool, nn.AvgPool2d) and pool.count_include_pad is False and pool.stride == 2
    ident, _ = pfconvert.convert(mnv2, "identity", input_size=SIZE)
    assert isinstance(ident.blocks[0][0].conv_dw, nn.Identity)
    assert isinstance(ident.blocks[1][0].conv_dw, Subsample) and ident.blocks[1][0].conv_dw.stride == 2
    shift, _ = pfconvert.convert(mnv2, "shift", input_size=SIZE)
    op = shift.blocks[1][0].conv_dw
    assert isinstance(op, nn.Sequential) and isinstance(op[0], Shift) and isinstance(op[1], Subsample)
    assert isinstance(shift.blocks[1][0].bn2, nn.Module) and not isinstance(shift.blocks[1][0].bn2, nn.Identity)
    for model in (avg, ident, shift):
        assert model(tiny_input(SIZE)).shape == (2, 10)


def test_shift_moves_channel_groups() -> None:
    x = torch.arange(9 * 16, dtype=torch.float32).reshape(1, 9, 4, 4)
    y = Shift(9)(x)
    assert torch.equal(y[:, 0], x[:, 0])  # centre group stays
    assert torch.equal(y[0, 1, 1:], x[0, 1, :3]) and torch.equal(y[0, 1, 0], torch.zeros(4))  # moved down, zero fill


def test_tf_same_padding_gets_a_same_pool() -> None:
    model = timm.create_model("tf_mobilenetv3_small_minimal_100", num_classes=10).eval()
    size = (3, 65, 65)  # odd size: TF 'same' padding is asymmetric here
    converted, record = pfconvert.convert(model, "maxpool", input_size=size)
    strided = [r for r in record.replacements if " s2" in r.old]
    assert strided and all(isinstance(converted.get_submodule(r.path), MaxPool2dSame) for r in strided)
    x = tiny_input(size)
    with torch.no_grad():
        assert converted(x).shape == model(x).shape
        for rep in strided:  # each pool gives the conv's exact output size at this input
            conv, pool = model.get_submodule(rep.path), converted.get_submodule(rep.path)
            feat = torch.randn(1, conv.in_channels, 33, 33)
            assert pool(feat).shape == conv(feat).shape


def test_maxpool_pads_with_minus_infinity() -> None:
    x = -torch.rand(1, 2, 5, 5) - 1.0  # all negative: zero padding would leak 0 into border maxima
    ref = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Conv2d(2, 2, 3, padding=2, dilation=2, groups=2))
    converted, _ = pfconvert.convert(net, "maxpool", input_size=(2, 5, 5))
    assert torch.equal(converted[0](x), ref)
    assert converted[1](x).max() < 0 and converted[1](x).shape == x.shape
    same = MaxPool2dSame(3, 2)(x)
    assert same.max() < 0


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
    rule = parse_rules("name: r\nrules: [{name: dw, match: {depthwise: true}, replace: {op: identity}}]")
    converted, _ = pfconvert.convert(block, rule, input_size=(4, 6, 6))
    x = torch.randn(1, 4, 6, 6)
    expected = x + torch.relu(x)
    assert torch.equal(converted(x.clone()), expected)
    assert converted.act.inplace is False


def test_rule_matching_nothing_is_an_error_unless_allowed(mnv2: nn.Module) -> None:
    with pytest.raises(RuleError, match="matched no layer.*--allow-empty"):
        pfconvert.convert(mnv2, "r50-max", input_size=SIZE)
    model, record = pfconvert.convert(mnv2, "r50-max", input_size=SIZE, allow_empty=True)
    assert record.replacements == [] and model.state_dict().keys() == mnv2.state_dict().keys()
