"""Deploy-time transforms compute what the eager model computes (speed is the benchmark's business, not tested)."""

from __future__ import annotations

import copy
import shutil

import pytest
import timm
import torch
from torch import nn

from pfconvert.deploy import (
    FusedGraph,
    fold_batchnorm,
    optimize_for_cpu,
    resolve_method,
    separate_pools,
    use_fast_kernels,
)
from pfconvert.deploy import cpu as deploy
from pfconvert.errors import PfconvertError
from pfconvert.ops.kernels import FastMaxPool2d

SIZE = 64


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding is really exercised."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def _maxpool_mnv2() -> nn.Module:
    """mobilenetv2_050 with its depthwise convs replaced by max-pools (and their BN+act by Identity), by hand."""
    model = _randomize_bn(timm.create_model("mobilenetv2_050", num_classes=10))
    for block in model.modules():
        conv = getattr(block, "conv_dw", None)
        if isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels == conv.out_channels:
            k, s = conv.kernel_size[0], conv.stride[0]
            block.conv_dw = nn.MaxPool2d(k, s, k // 2)
            norm = "bn1" if type(block).__name__ == "DepthwiseSeparableConv" else "bn2"
            setattr(block, norm, nn.Identity())
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2_050", "efficientnet_lite0"])
def test_fold_batchnorm_matches_eager(name: str, x: torch.Tensor) -> None:
    model = _randomize_bn(timm.create_model(name, num_classes=10))
    folded, count = fold_batchnorm(model)
    assert count > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert type(folded) is type(model)  # the class (and its methods) survive
    with torch.no_grad():
        # max-pool picks the largest input, so folding's rounding can flip a pick: 1e-3 rather than 1e-4
        torch.testing.assert_close(folded(x), model(x), rtol=1e-3, atol=1e-3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # not in place by default


def test_fold_batchnorm_refuses_training_mode() -> None:
    with pytest.raises(PfconvertError, match="eval mode"):
        fold_batchnorm(timm.create_model("resnet18").train())


def test_fold_batchnorm_keeps_bn_whose_conv_output_is_shared(x: torch.Tensor) -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            y = self.conv(t)
            return self.bn(y) + y

    model = _randomize_bn(Shared())
    folded, count = fold_batchnorm(model)
    assert count == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("k, s", [(3, 1), (3, 2), (5, 1), (5, 2), (2, 2)])
def test_fast_max_pool_is_exact(k: int, s: int) -> None:
    t = torch.randn(2, 8, 17, 17)
    pool, fast = nn.MaxPool2d(k, s, k // 2), FastMaxPool2d(k, s, k // 2)
    with torch.inference_mode():
        assert torch.equal(fast(t), pool(t))
        assert torch.equal(fast(t.contiguous(memory_format=torch.channels_last)), pool(t))
    grad_in = t.clone().requires_grad_()  # autograd on: falls back to nn.MaxPool2d and backpropagates
    fast(grad_in).sum().backward()
    assert grad_in.grad is not None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated; tracing is what is tested
def test_fast_max_pool_traces_exports_and_folds_as_a_plain_pool(x: torch.Tensor) -> None:
    model = _maxpool_mnv2()
    use_fast_kernels(model)
    assert any(isinstance(m, FastMaxPool2d) for m in model.modules())
    folded, count = fold_batchnorm(model)  # FX sees the pool as one leaf node
    assert count > 0
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))
        # max-pool picks the largest input, so folding's rounding can flip a pick: 1e-3 rather than 1e-4
        torch.testing.assert_close(folded(x), model(x), rtol=1e-3, atol=1e-3)


def test_separate_pools_is_exact_and_only_for_large_windows() -> None:
    model = nn.Sequential(nn.MaxPool2d(5, 1, 2), nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(5, 2, 2), nn.MaxPool2d(7, 2, 3))
    ref = copy.deepcopy(model)
    assert separate_pools(model) == 3
    assert isinstance(model[1], nn.MaxPool2d)  # 3x3 stays whole
    t = torch.randn(2, 4, 23, 23)
    assert torch.equal(model(t), ref(t))


def test_use_fast_kernels_swaps_plain_pools_only() -> None:
    model = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1), FastMaxPool2d(3, 1, 1))
    assert use_fast_kernels(model) == 1
    assert isinstance(model[0], FastMaxPool2d) and isinstance(model[1], nn.AvgPool2d)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["eager", "jit", "llga"])
@pytest.mark.parametrize("build", [_maxpool_mnv2, lambda: _randomize_bn(timm.create_model("resnet18", num_classes=10))],
                         ids=["mnv2-maxpool", "resnet18"])
def test_optimize_for_cpu_matches_eager(method: str, build, x: torch.Tensor) -> None:
    model = build()
    before = copy.deepcopy(model.state_dict())
    fast = optimize_for_cpu(model, x, method=method)
    with torch.inference_mode():
        ref = model(x)
        # BN folding re-associates fp32 sums: the error grows with the logits' magnitude, so atol scales with it
        atol = 1e-4 * max(1.0, ref.abs().max().item())
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=atol)
        torch.testing.assert_close(fast(x[:1]), model(x[:1]), rtol=1e-4, atol=atol)  # another batch size
    for key, value in model.state_dict().items():  # the model itself is untouched
        assert torch.equal(value, before[key])


@pytest.mark.slow
def test_optimize_for_cpu_compile_matches_eager(x: torch.Tensor) -> None:
    if not shutil.which("g++") and not shutil.which("c++"):
        pytest.skip("no C++ compiler: torch.compile's CPU backend is unavailable")
    model = _randomize_bn(nn.Sequential(  # tiny: compile time, not model size, dominates this test
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(3, 1, 1),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(), nn.MaxPool2d(5, 2, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)))
    fast = optimize_for_cpu(model, x, method="compile")
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_auto_resolves_to_the_first_available_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is the first method of AUTO_ORDER this machine has: availability decides, not the order alone."""
    import dataclasses

    from pfconvert.deploy import methods

    def only(*names: str) -> None:
        for name, method in list(methods._METHODS.items()):
            monkeypatch.setitem(methods._METHODS, name, dataclasses.replace(
                method, is_available=lambda name=name: name in names))

    assert resolve_method("eager") == "eager"
    only("jit", "compile", "eager")
    assert resolve_method("auto") == "jit"
    only("compile", "eager")
    assert resolve_method("auto") == "compile"
    only()
    assert resolve_method("auto") == "eager"
    monkeypatch.undo()
    assert resolve_method("auto") == next(m for m in methods.AUTO_ORDER if methods._METHODS[m].is_available())


@pytest.mark.slow
def test_llga_turns_fusion_on_for_its_own_calls_only(x: torch.Tensor) -> None:
    model = _maxpool_mnv2()
    assert not torch.jit.onednn_fusion_enabled()
    fast = optimize_for_cpu(model, x, method="llga")
    assert isinstance(fast.inner, FusedGraph) and fast.method == "llga" and not torch.jit.onednn_fusion_enabled()
    plain = optimize_for_cpu(model, x, method="jit")  # a jit graph next to it still runs (it must run unfused)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
    assert not torch.jit.onednn_fusion_enabled()


@pytest.mark.slow
def test_auto_falls_back_to_jit_when_fusion_fails(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "has_llga", lambda: True)

    def broken(model: nn.Module, example: torch.Tensor) -> None:
        raise RuntimeError("fusion pass failed")
    monkeypatch.setattr(deploy, "build_llga", broken)
    model = _maxpool_mnv2()
    expected = r"method 'llga' \(oneDNN Graph fusion\) failed \(RuntimeError: fusion pass failed\); using method 'jit'"
    with pytest.warns(RuntimeWarning, match=expected):
        fast = optimize_for_cpu(model, x)
    assert not isinstance(fast.inner, FusedGraph) and fast.method == "jit"
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-3)
    with pytest.raises(PfconvertError, match="method 'llga' failed"):  # asked for by name: no fallback
        optimize_for_cpu(model, x, method="llga")


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(PfconvertError, match="unknown deploy method"):
        optimize_for_cpu(nn.Identity(), torch.zeros(1, 3, 4, 4), method="fast")


@pytest.mark.slow
def test_reports_name_the_method_actually_used_after_a_fallback(x: torch.Tensor,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.report.latency import LatencyConfig, measure
    from pfconvert.report.run import run_report

    monkeypatch.setattr(deploy, "has_llga", lambda: True)
    monkeypatch.setattr(deploy, "build_llga", lambda model, example: (_ for _ in ()).throw(RuntimeError("no fusion")))
    model = _maxpool_mnv2()
    config = LatencyConfig(batch_sizes=(1,), input_size=tuple(x.shape[1:]), runs=2, warmup=0, max_seconds=1)
    with pytest.warns(RuntimeWarning, match="using method 'jit'"):
        timings = measure({"a": model, "b": model}, ["cpu"], config)
    assert timings.methods[("cpu", 1)] == "jit"
    with pytest.warns(RuntimeWarning):
        report = run_report(model, model, input_size=tuple(x.shape[1:]), batch_sizes=(1,), backends=["cpu"], runs=2,
                            warmup=0, memory=False)
    assert report.latency[0].backend_label == "PyTorch CPU deployed (jit)"


@pytest.mark.slow
def test_when_one_model_falls_back_all_are_deployed_the_same_way(x: torch.Tensor,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.report.latency import LatencyConfig, measure

    model, other = _maxpool_mnv2(), _maxpool_mnv2()
    other.no_fusion = True  # kept by the deployment's copy
    real = deploy.build_llga

    def llga_fails_for_other(module, example):  # type: ignore[no-untyped-def]
        if any(getattr(m, "no_fusion", False) for m in module.modules()):
            raise RuntimeError("no fusion")
        return real(module, example)

    monkeypatch.setattr(deploy, "has_llga", lambda: True)
    monkeypatch.setattr(deploy, "build_llga", llga_fails_for_other)
    config = LatencyConfig(batch_sizes=(1,), input_size=tuple(x.shape[1:]), runs=2, warmup=0, max_seconds=1)
    with pytest.warns(RuntimeWarning, match="using method 'jit'"):
        timings = measure({"a": model, "b": other}, ["cpu"], config)
    assert timings.methods[("cpu", 1)] == "jit"  # not "llga / jit": a is re-deployed with jit, like b
