"""``shrink``: a conv whose input map keeps kernel taps out of play becomes the smaller conv it equals, exactly."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

import pfconvert
from pfconvert.conversion.shrinking import shrinkable_layers, with_shrink
from pfconvert.errors import ConversionError
from pfconvert.ops.shrink import ShrunkConv2d, axis_taps
from pfconvert.rules import parse_rules


def _shrunk(conv: nn.Module, size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    net = nn.Sequential(conv).eval()
    paths = shrinkable_layers(net, (conv.in_channels, *size))
    assert paths == ["0"]
    converted, record = pfconvert.convert(net, with_shrink(None, paths), input_size=(conv.in_channels, *size))
    assert record.replacements[0].note.startswith("exact: ")
    return net, converted


@pytest.mark.parametrize(("conv", "size", "kernel"), [
    (nn.Conv2d(4, 6, 3, 1, 1), (1, 1), (1, 1)),  # 1x1 map: the centre tap, a 1x1 conv
    (nn.Conv2d(4, 4, 3, 2, 1, groups=4), (2, 2), (2, 2)),  # strided, depthwise: the bottom-right 2x2 taps
    (nn.Conv2d(4, 4, 7, 1, 3), (3, 3), (5, 5)),  # 3x3 map, 7x7 kernel: taps 1..5 per axis
    (nn.Conv2d(4, 4, 3, 1, 2, dilation=2), (2, 2), (1, 1)),  # dilated: only the centre lands on the 2x2 map
    (nn.Conv2d(4, 4, 3, 1, 1), (1, 5), (1, 3)),  # one row: the middle row of taps, padding kept along the row
    (nn.Conv2d(4, 4, 3, 1, 1, dilation=2), (3, 3), (1, 1)),  # the smaller conv crops the map (negative pads)
    (Conv2dSame(4, 4, 3, 2), (2, 2), (2, 2)),  # timm TF-'same' padding (1 pixel right/bottom only)
])
def test_the_smaller_conv_gives_the_same_outputs(conv: nn.Module, size: tuple[int, int], kernel: tuple) -> None:
    torch.manual_seed(0)
    net, converted = _shrunk(conv, size)
    op = converted[0]
    assert isinstance(op, ShrunkConv2d) and tuple(op.kernel_size) == kernel
    x = torch.randn(3, conv.in_channels, *size)
    with torch.no_grad():
        assert torch.allclose(converted(x), net(x), atol=1e-6)
    assert sum(p.numel() for p in converted.parameters()) < sum(p.numel() for p in net.parameters())
    with pytest.raises(RuntimeError, match="shrunk for .* input maps"):  # another size: refused, not wrong
        converted(torch.randn(1, conv.in_channels, size[0] + 2, size[1] + 2))


@pytest.mark.slow
def test_exact_over_a_grid_of_geometries() -> None:
    """Every shrinkable (size, kernel, stride, padding, dilation) of a small grid, each axis its own: exact."""
    from pfconvert.ops.shrink import plan_taps, shrink_conv

    torch.manual_seed(0)
    checked = 0
    for n in range(1, 5):
        for k in range(2, 6):
            for s in (1, 2, 3):
                for p in range(k):
                    for d in (1, 2):
                        if (k - 1) * d + 1 > n + 2 * p:
                            continue
                        conv = nn.Conv2d(2, 3, (k, 3), (s, 1), (p, 1), (d, 1))
                        try:
                            plan = plan_taps(conv, [(1, 2, n, 2)])
                        except ValueError:  # no tap reads the map at all (the output is the bias): not shrunk
                            continue
                        if not plan.shrinks:
                            continue
                        x = torch.randn(2, 2, n, 2)
                        with torch.no_grad():
                            assert torch.allclose(shrink_conv(conv, plan)(x), conv(x), atol=1e-6), (n, k, s, p, d)
                        checked += 1
    assert checked >= 80


def test_every_tap_in_play_is_not_shrunk() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1))  # 2x2 map, stride 1: each tap reads a pixel at some output
    assert shrinkable_layers(net, (4, 2, 2)) == [] and axis_taps(2, 3, 1, 1, 1, 1) == (0, 3, 2)
    rule = parse_rules("name: s\nrules: [{name: s, match: {op: conv2d}, replace: {op: shrink}}]")
    with pytest.raises(ConversionError, match="layer '0': cannot shrink: every tap of the kernel reads the 2x2"):
        pfconvert.convert(net, rule, input_size=(4, 2, 2))
    std = nn.Sequential(timm.layers.StdConv2d(4, 4, 3, padding=1))  # computes its weight in forward
    assert shrinkable_layers(std, (4, 1, 1)) == []


def _random_norms(model: nn.Module) -> nn.Module:
    """timm zero-inits the last norm of each block, which would hide any error of the block; give them values."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.slow
def test_resnet26_at_32px_last_stage_becomes_1x1_convs_exactly(tmp_path) -> None:
    model = _random_norms(timm.create_model("resnet26", num_classes=10))
    paths = shrinkable_layers(model, (3, 32, 32))
    assert paths == ["layer4.0.conv2", "layer4.1.conv2"]  # 2x2 -> 1x1 (stride 2), then 1x1 maps
    converted, record = pfconvert.convert(model, with_shrink(None, paths), input_size=(3, 32, 32))
    assert [tuple(converted.get_submodule(p).kernel_size) for p in paths] == [(2, 2), (1, 1)]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before, after = model(x), converted.eval()(x)
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert record.params_before - record.params_after == 512 * 512 * (9 - 4) + 512 * 512 * (9 - 1)
    from pfconvert.deploy import fold_batchnorm

    folded, n = fold_batchnorm(converted.eval())  # the shrunk convs' norms fold too (deployed CPU paths)
    assert n == 29 and type(folded.layer4[1].bn2).__name__ != "BatchNorm2d"  # all of them
    with torch.no_grad():
        assert (folded(x) - before).abs().max() <= 1e-5 * before.abs().max()
    record.model_name = "resnet26"
    record.model_kwargs = {"num_classes": 10}
    pfconvert.save(converted, record, tmp_path / "art")  # the artifact replays the rule: same shapes, no pickles
    with torch.no_grad():
        assert torch.equal(pfconvert.load(tmp_path / "art").eval()(x), after)


def test_inspect_says_a_pool_is_an_identity_on_a_1x1_map() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1, groups=4), nn.Conv2d(4, 4, 3, 2, 1, groups=4))
    at_1 = pfconvert.preview(net, "maxpool", (4, 1, 1))
    assert [r.note for r in at_1] == ["an identity on the 1x1 map (every window holds one real pixel)"] * 2
    assert [r.note for r in pfconvert.preview(net, "maxpool", (4, 4, 4))] == ["", ""]  # real windows: no note


@pytest.mark.slow
def test_inspect_prints_the_note() -> None:
    import json

    from typer.testing import CliRunner

    from pfconvert.cli.app import _register, app

    _register()
    result = CliRunner().invoke(app, ["inspect", "resnet26", "--rule", "r50-max", "--input-size", "3,32,32", "--json"])
    rows = {row["layer"]: row["note"] for row in json.loads(result.stdout)}
    assert rows["layer4.1.conv2"] == "an identity on the 1x1 map (every window holds one real pixel)"
    assert rows["layer4.0.conv2"] == "" and rows["layer1.0.conv2"] == ""  # a 2x2 max over the 2x2 map; 8x8 maps
