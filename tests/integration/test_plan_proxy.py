"""The planner's proxy of the fine-tuned result (issue 28, item 2): a short distillation of each candidate from the
original before it is scored, on a tiny model at 32 px and the committed Fashion-MNIST sample."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from pfconvert.data.config import resolve_data_config
from pfconvert.rules import load_rules
from pfconvert.study.plan import plan_on_data
from pfconvert.study.proxy import DistillProxy
from tests.conftest import FASHION_MNIST_SAMPLE

pytestmark = pytest.mark.slow

DATA = str(FASHION_MNIST_SAMPLE)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("mobilenetv2_050", num_classes=10).eval()


def _plan(model: torch.nn.Module, proxy_images: int):
    return plan_on_data(model, [load_rules("maxpool")], DATA, backend="cpu-eager", batch_sizes=(1,), max_drop=100.0,
                        img_size=32, limit_val=100, bn_recalib_images=32, reconstruct_images=0, batch_size=32,
                        runs=3, max_seconds=1.0, retime_passes=0, shrink=False, proxy_images=proxy_images)


def test_proxy_scores_after_a_short_distillation_and_leaves_the_original_alone() -> None:
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    old = _plan(model, 0)
    new = _plan(model, 64)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the original is untouched
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    # 0: the old scoring, no proxy recorded
    assert old.proxy is None and all(c.top1_before_proxy is None for c in old.candidates)
    assert new.proxy is not None and new.proxy["images"] == 64 and new.proxy["steps"] == 2
    by_name = {c.name: c for c in old.candidates}
    assert [c.name for c in new.candidates] == list(by_name)
    # the score before the proxy is the old score; after it the score moved for some candidate
    assert all(c.top1_before_proxy == pytest.approx(by_name[c.name].top1) for c in new.candidates)
    assert any(abs(c.top1 - c.top1_before_proxy) > 1e-6 for c in new.candidates)
    assert new.base_top1 == old.base_top1
    data = new.to_dict()
    assert data["proxy"]["images"] == 64 and "top1_before_proxy" in data["candidates"][0]


def test_proxy_is_deterministic_under_its_seed_and_trains_the_candidate() -> None:
    model = _model()
    cfg = resolve_data_config(model).with_size(32)
    proxy = DistillProxy.build(model, DATA, cfg, images=64, batch_size=32)
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    rng = torch.get_rng_state()
    proxy(one)
    proxy(two)
    assert torch.equal(torch.get_rng_state(), rng)  # every RNG as before
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(one.state_dict().values(), model.state_dict().values()))
    other = copy.deepcopy(model)
    DistillProxy.build(model, DATA, cfg, images=64, batch_size=32, seed=1)(other)
    assert any(not torch.equal(a, b) for a, b in zip(one.state_dict().values(), other.state_dict().values()))
    assert "64 training images" in proxy.describe()
