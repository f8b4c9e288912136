"""Regressions from the maxpool coverage run over timm (benchmarks/coverage.py): each class of layer it found.

Real timm models are built on the meta device (shapes only, no compute); value checks use tiny CPU modules.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import meta_model
from timm.layers import CondConv2d
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

import pfconvert
from pfconvert.graph.dataflow import trace_dataflow
from pfconvert.ops import ChannelRepeat, DropExtraArgs, describe_op

NEG_INF = float("-inf")


def _max_ref(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
             dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Max over each conv window, the padding being -inf: what a depthwise conv's max-pool must compute."""
    return F.max_pool2d(F.pad(x, pads, value=NEG_INF), kernel, stride, 0, dilation)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _negative(shape: tuple[int, ...]) -> torch.Tensor:
    """All-negative input: zero padding would leak 0 into border maxima, -inf padding does not."""
    return -torch.rand(shape, generator=torch.Generator().manual_seed(0)) - 1.0


# ------------------------------------------------------------------ rectangular kernels (ghostnetv2/v3, InceptionNeXt)


@pytest.mark.slow
def test_ghostnetv2_rectangular_depthwise_convs_become_rectangular_pools() -> None:
    model = meta_model("ghostnetv2_100")
    old = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1}
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    assert len(record.replacements) == len(old)
    rect = [r for r in record.replacements if old[r.path].kernel_size[0] != old[r.path].kernel_size[1]]
    assert len(rect) == 28
    for rep in rect:
        conv, pool = old[rep.path], converted.get_submodule(rep.path)
        assert isinstance(pool, nn.MaxPool2d)
        assert (pool.kernel_size, _pair(pool.stride), pool.padding) == (conv.kernel_size, conv.stride, conv.padding)
        assert rep.old.endswith(f"k{conv.kernel_size[0]}x{conv.kernel_size[1]} s1 dw")
    first = converted.blocks[2][0].ghost1.short_conv
    assert describe_op(first[2]) == "MaxPool2d 1x5 s1 p0x2" and describe_op(first[4]) == "MaxPool2d 5x1 s1 p2x0"


@pytest.mark.slow
def test_inception_next_band_kernels_keep_their_output_shape() -> None:
    model = meta_model("inception_next_atto")
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    mixer = converted.stages[0].blocks[0].token_mixer
    assert isinstance(mixer.dwconv_w, nn.MaxPool2d) and mixer.dwconv_w.kernel_size == (1, 9)
    assert isinstance(mixer.dwconv_h, nn.MaxPool2d) and mixer.dwconv_h.kernel_size == (9, 1)
    assert isinstance(mixer.dwconv_hw, nn.MaxPool2d) and mixer.dwconv_hw.kernel_size == 3
    out = converted(torch.randn(1, 3, 224, 224, device="meta"))
    assert out.shape == (1, 1000)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [((1, 7), (1, 1), (0, 3), (1, 1)),  # band kernel
     ((5, 3), (2, 1), (2, 1), (1, 1)),  # stride per axis
     ((3, 5), (1, 1), (1, 4), (1, 2)),  # dilation per axis, padding beyond half the undilated kernel
     ((3, 1), (1, 1), (1, 0), (2, 1))],  # padding below half the dilated window: shrinks the output
)
def test_rectangular_pool_equals_minus_inf_padded_max(kernel: tuple, stride: tuple, padding: tuple,
                                                      dilation: tuple) -> None:
    net = nn.Sequential(nn.Conv2d(3, 3, kernel, stride, padding, dilation, groups=3))
    converted, _ = pfconvert.convert(net, "maxpool", input_size=(3, 9, 10))
    x = _negative((2, 3, 9, 10))
    pads = (padding[1], padding[1], padding[0], padding[0])
    expected = _max_ref(x, kernel, stride, pads, dilation)
    with torch.no_grad():
        assert converted(x).shape == net(x).shape
        assert torch.equal(converted(x), expected)
    op = converted[0]
    if max(padding[0] - kernel[0] // 2, padding[1] - kernel[1] // 2) > 0:  # MaxPool2d cannot pad that much itself
        assert isinstance(op, nn.Sequential) and isinstance(op[0], nn.ConstantPad2d) and op[0].value == NEG_INF
    else:
        assert isinstance(op, nn.MaxPool2d) and op.kernel_size == kernel and op.padding == padding


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_torch_same_padding_with_an_even_window_pads_right_and_bottom() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, (2, 4), padding="same", groups=2))
    converted, _ = pfconvert.convert(net, "maxpool", input_size=(2, 6, 7))
    op = converted[0]
    assert isinstance(op, nn.Sequential) and tuple(op[0].padding) == (1, 2, 0, 1) and op[0].value == NEG_INF
    x = _negative((1, 2, 6, 7))
    assert torch.equal(converted(x), _max_ref(x, (2, 4), (1, 1), (1, 2, 0, 1)))
    assert converted(x).shape == net(x).shape


def test_rectangular_kernel_is_still_refused_where_the_op_needs_a_square() -> None:
    net = nn.Sequential(nn.Conv2d(3, 3, (1, 3), stride=2, padding=(0, 1), groups=3))
    rule = pfconvert.load_rules("identity")
    with pytest.raises(pfconvert.PfconvertError, match="non-square kernel/stride"):
        pfconvert.convert(net, rule, input_size=(3, 8, 8))
    stride1 = nn.Sequential(nn.Conv2d(3, 3, (1, 3), padding=(0, 1), groups=3))
    converted, _ = pfconvert.convert(stride1, rule, input_size=(3, 8, 8))
    assert isinstance(converted[0], nn.Identity)  # a stride-1 'same' layer is an identity whatever its kernel


# ---------------------------------------------------------------------------------- layers called with extra arguments


class _ScaledDw(nn.Conv2d):
    """A depthwise conv subclass whose forward takes an optional extra argument, which its caller passes."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x)
        return out if scale is None else out * scale


class _ExtraArgNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = _ScaledDw(4, 4, 3, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(x, torch.ones(1))


def test_conv_with_an_optional_extra_argument_is_wrapped() -> None:
    converted, _ = pfconvert.convert(_ExtraArgNet(), "maxpool", input_size=(4, 6, 6))
    assert isinstance(converted.dw, DropExtraArgs) and isinstance(converted.dw.op, nn.MaxPool2d)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(converted(x), F.max_pool2d(x, 3, 1, 1))


@pytest.mark.slow
def test_condconv_efficientnet_gets_pools_that_drop_routing_weights() -> None:
    model = meta_model("efficientnet_cc_b0_4e")
    n_cond = sum(isinstance(m, CondConv2d) and m.groups == m.in_channels for m in model.modules())
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    wrapped = [converted.get_submodule(r.path) for r in record.replacements if r.old.startswith("CondConv2d")]
    assert n_cond and len(wrapped) == n_cond
    assert all(isinstance(op, DropExtraArgs) and isinstance(op.op, nn.MaxPool2d) for op in wrapped)
    plain = converted.get_submodule(record.replacements[0].path)
    assert isinstance(plain, nn.MaxPool2d)  # a plain Conv2d needs no wrapper


# ----------------------------------------------------------------------------- shared modules (called more than once)


class _SharedConv(nn.Module):
    """One depthwise conv + BN applied at two places (as CoaT shares its conv position encodings)."""

    def __init__(self, shared_bn: bool = False) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.shared_bn = shared_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.dw(x))
        z = self.bn(self.dw(y * 2))
        return z + (self.bn(x) if self.shared_bn else 0)  # a shared BN also normalises something else


def test_shared_conv_and_its_norm_are_replaced_once_for_every_call() -> None:
    converted, record = pfconvert.convert(_SharedConv().eval(), "maxpool", input_size=(4, 6, 6))
    assert [(r.path, r.absorbed) for r in record.replacements] == [("dw", ["bn"])]
    assert isinstance(converted.dw, nn.MaxPool2d) and isinstance(converted.bn, nn.Identity)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(converted(x), F.max_pool2d(F.max_pool2d(x, 3, 1, 1) * 2, 3, 1, 1))


def test_norm_that_also_serves_another_input_is_not_absorbed() -> None:
    net = _SharedConv(shared_bn=True).eval()
    flow = trace_dataflow(net, (4, 6, 6))
    assert [c.path for c in flow.calls_of("bn")] == ["bn", "bn", "bn"]
    converted, record = pfconvert.convert(net, "maxpool", input_size=(4, 6, 6))
    assert record.replacements[0].absorbed == []
    assert isinstance(converted.dw, nn.MaxPool2d) and isinstance(converted.bn, nn.BatchNorm2d)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        pool = lambda t: F.max_pool2d(t, 3, 1, 1)  # noqa: E731
        expected = net.bn(pool(net.bn(pool(x)) * 2)) + net.bn(x)
        assert torch.allclose(converted(x), expected)


@pytest.mark.slow
def test_efficientvit_shared_activation_is_kept() -> None:
    model = meta_model("efficientvit_m0")  # PatchMerging: act(conv2(act(conv1(x)))) with one shared ReLU
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    merge = converted.stages[1].downsample.patchmerge
    rep = next(r for r in record.replacements if r.path == "stages.1.downsample.patchmerge.conv2.conv")
    assert rep.absorbed == ["stages.1.downsample.patchmerge.conv2.bn"]  # the norm goes, the shared act stays
    assert isinstance(merge.conv2.conv, nn.MaxPool2d) and isinstance(merge.conv2.bn, nn.Identity)
    assert isinstance(merge.act, nn.ReLU)


def test_coat_shared_position_encodings_are_all_converted() -> None:
    model = meta_model("coat_lite_tiny")
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    assert len(record.replacements) == 16
    assert converted.serial_blocks1[0].cpe.proj is converted.cpe1.proj  # still shared, now a pool
    assert isinstance(converted.cpe1.proj, nn.MaxPool2d)
    assert not any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in converted.modules())


# ---------------------------------------------------------------------------------------- input passed by keyword


class _KeywordCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.dw(input=x))


def test_layer_called_with_its_input_by_keyword_is_traced() -> None:
    flow = trace_dataflow(_KeywordCall(), (4, 8, 8))
    assert flow.by_path["dw"].input_shape == (1, 4, 8, 8) and flow.by_path["dw"].output_shape == (1, 4, 4, 4)
    converted, record = pfconvert.convert(_KeywordCall().eval(), "maxpool", input_size=(4, 8, 8))
    assert record.replacements[0].absorbed == ["bn"] and isinstance(converted.bn, nn.Identity)
    assert isinstance(converted.dw, nn.MaxPool2d) and converted(torch.randn(1, 4, 8, 8)).shape == (1, 4, 4, 4)


# ------------------------------------------------------------------------- dilation, TF-'same', depth multipliers


@pytest.mark.slow
def test_dilated_timm_model_converts_with_dilated_pools() -> None:
    model = meta_model("mobilenetv2_050", output_stride=8)
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 224, 224))
    dilated = [converted.get_submodule(r.path) for r in record.replacements if " d" in r.new]
    assert dilated, "output_stride=8 dilates the late depthwise convs"
    for op in dilated:
        pool = op[-1] if isinstance(op, nn.Sequential) else op
        assert isinstance(pool, nn.MaxPool2d) and pool.dilation in (2, 4)
    assert converted(torch.randn(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_dilated_tf_same_conv_gets_a_dilated_same_pool() -> None:
    from timm.layers import create_conv2d

    conv = create_conv2d(3, 3, 3, stride=2, dilation=2, padding="same", depthwise=True)
    converted, _ = pfconvert.convert(nn.Sequential(conv), "maxpool", input_size=(3, 11, 11))
    op = converted[0]
    assert isinstance(op, MaxPool2dSame) and op.dilation == (2, 2)
    for size in (11, 12, 13):
        x = _negative((1, 3, size, size))
        with torch.no_grad():
            assert op(x).shape == conv(x).shape and op(x).max() < 0


@pytest.mark.slow
def test_fastvit_depth_multiplier_convs_repeat_channels() -> None:
    model = meta_model("fastvit_t8")
    converted, record = pfconvert.convert(model, "maxpool", input_size=(3, 256, 256))
    mult = [r for r in record.replacements if "ChannelRepeat" in r.new]
    assert mult
    op = converted.get_submodule(mult[0].path)
    assert isinstance(op, nn.Sequential) and isinstance(op[-1], ChannelRepeat) and op[-1].repeats >= 2


# ------------------------------------------------------------------------------------------- the benchmark itself


def _coverage_module() -> Any:
    import benchmarks.coverage

    return benchmarks.coverage


@pytest.mark.slow
def test_coverage_probe_classifies_models() -> None:
    cov = _coverage_module()
    ok = cov.probe_model("ghostnetv2_100", paths="meta")
    assert (ok.status, ok.path, ok.replaced) == ("ok", "meta", ok.depthwise) and ok.depthwise > 0
    assert cov.probe_model("resnet18", paths="meta").status == "no-depthwise"
    text = cov.summarize([ok, cov.Result("x", status="engine-failure", phase="convert", reason="boom")], 2)
    assert "converted + forward OK" in text and "x [-, convert]: boom" in text


@pytest.mark.slow
def test_residual_suite_classifies_models() -> None:
    cov = _coverage_module()
    basic = cov.probe_model("resnet18", paths="meta", suite="residual")
    assert (basic.status, list(basic.rules)) == ("ok", ["basic-max"]) and basic.rules["basic-max"]["replaced"] == 5
    sk = cov.probe_model("skresnet18", paths="meta", suite="residual")  # SK convs split their input: the 2nd is pooled
    assert (sk.status, list(sk.rules)) == ("ok", ["basic-max-last"]) and sk.rules["basic-max-last"]["replaced"] == 8
    bottleneck = cov.probe_model("resnext26ts", paths="meta", suite="residual")
    assert bottleneck.status == "ok" and set(bottleneck.rules) >= {"bottleneck-max", "bottleneck-hybrid"}
    params = bottleneck.rules["bottleneck-max"]["params"]
    assert params[1] < params[0]
    repvgg = cov.probe_model("repvgg_a0", paths="meta", suite="residual")
    assert repvgg.status == "not-replaceable" and "only trainable layer of its branch" in repvgg.reason
    assert cov.probe_model("mobilenetv2_050", paths="meta", suite="residual").status == "no-target"
    text = cov.summarize([basic, bottleneck, repvgg], 3, suite="residual")
    assert "with a replaceable k x k conv in a residual branch" in text and "repvgg_a0 [meta, ]" in text
    from benchmarks._residual_suite import family_table

    table = family_table([basic, bottleneck], {"resnet18": "resnet", "resnext26ts": "byobnet"})
    assert "| resnet | 1 | `basic-max` | 1 | 5 |" in table and "| byobnet | 1 | `bottleneck-max` | 1 |" in table
