"""Depthwise-conv rules on inverted-bottleneck nets, and the correctness traps of conversion."""

from __future__ import annotations

import pytest
import timm
import torch
from helpers import tiny_input
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

import pfconvert
from pfconvert.errors import RuleError
from pfconvert.ops.identity import Subsample
from pfconvert.ops.shift import Shift

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


@pytest.mark.slow
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


@pytest.mark.slow
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
            assert pool(-feat.abs() - 1).max() < 0  # timm's 'same' max-pool pads with -inf too


def test_rule_matching_nothing_is_an_error_unless_allowed(mnv2: nn.Module) -> None:
    with pytest.raises(RuleError, match="matched no layer.*--allow-empty"):
        pfconvert.convert(mnv2, "r50-max", input_size=SIZE)
    model, record = pfconvert.convert(mnv2, "r50-max", input_size=SIZE, allow_empty=True)
    assert record.replacements == [] and model.state_dict().keys() == mnv2.state_dict().keys()


def test_dw_hybrid_keeps_the_downsampling_and_first_stage_depthwise_convs(mnv2: nn.Module) -> None:
    before = _dw_convs(mnv2)
    kept = {path for path, conv in before.items() if conv.stride[0] == 2 or path.startswith("blocks.0.")}
    model, record = pfconvert.convert(mnv2, "dw-hybrid", input_size=SIZE)
    assert {r.path for r in record.replacements} == set(before) - kept and kept
    assert all(isinstance(model.get_submodule(path), nn.Conv2d) for path in kept)
    assert all(isinstance(model.get_submodule(r.path), nn.MaxPool2d) and r.absorbed for r in record.replacements)
    assert model(tiny_input(SIZE)).shape == (2, 10)


def test_keepnorm_rules_keep_the_replaced_layers_norm_and_activation(mnv2: nn.Module) -> None:
    _, plain = pfconvert.convert(mnv2, "dw-hybrid", input_size=SIZE)
    model, record = pfconvert.convert(mnv2, "dw-hybrid-keepnorm", input_size=SIZE)
    assert [r.path for r in record.replacements] == [r.path for r in plain.replacements]
    for rep in record.replacements:
        block = model.get_submodule(rep.path.rpartition(".")[0])
        assert not rep.absorbed and isinstance(block.bn2, nn.BatchNorm2d)  # the dw conv's BN (and act) stay
    assert record.params_after > plain.params_after
    _, every = pfconvert.convert(mnv2, "maxpool-keepnorm", input_size=SIZE)
    assert len(every.replacements) == len(_dw_convs(mnv2)) and not any(r.absorbed for r in every.replacements)
