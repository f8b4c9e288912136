"""The transformer half of the paper: every other attention becomes a max-pool token mixer."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import tiny_input
from timm.layers import Attention

import pfconvert
from pfconvert.ops.mixers import EffMaxMixer, PoolMixer

SIZE = (3, 64, 64)


def _vit(**kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10, **kwargs)


@pytest.mark.slow
def test_vit_max_replaces_every_other_attention() -> None:
    vit = _vit().eval()
    model, record = pfconvert.convert(vit, "vit-max", input_size=SIZE)
    assert [r.path for r in record.replacements] == [f"blocks.{i}.attn" for i in (1, 3, 5, 7, 9, 11)]
    for i, block in enumerate(model.blocks):
        assert isinstance(block.attn, EffMaxMixer if i % 2 else Attention)
    mixer = model.blocks[1].attn
    assert (mixer.fc1.in_features, mixer.fc1.out_features, mixer.fc2.out_features) == (192, 576, 192)
    assert mixer.num_prefix_tokens == 1 and mixer.grid_size == (4, 4)
    assert model(tiny_input(SIZE)).shape == (2, 10) and type(model) is type(vit)


def test_eff_max_mixer_computes_the_papers_layer_and_skips_prefix_tokens() -> None:
    mixer = EffMaxMixer(8, expand=3, num_prefix_tokens=1, grid_size=(3, 3)).eval()
    x = torch.randn(2, 10, 8)
    out = mixer(x)
    assert torch.equal(out[:, 0], torch.zeros(2, 8))  # class token: the residual passes it through unchanged
    h = F.gelu(mixer.fc1(x[:, 1:])).transpose(1, 2).reshape(2, 24, 3, 3)
    h = F.gelu(F.max_pool2d(h, 3, 1, 1)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out[:, 1:], mixer.fc2(h))


@pytest.mark.slow
def test_pool_mixer_is_parameter_free() -> None:
    vit = _vit(class_token=False, global_pool="avg").eval()
    model, record = pfconvert.convert(vit, "vit-pool", input_size=SIZE)
    mixer = model.blocks[1].attn
    assert isinstance(mixer, PoolMixer) and sum(p.numel() for p in mixer.parameters()) == 0
    assert record.params_before - record.params_after == 6 * sum(p.numel() for p in vit.blocks[1].attn.parameters())
    grid = torch.randn(1, 4, 3, 3)
    tokens = grid.flatten(2).transpose(1, 2)
    expected = (F.avg_pool2d(grid, 3, 1, 1, count_include_pad=False) - grid).flatten(2).transpose(1, 2)
    torch.testing.assert_close(PoolMixer(grid_size=(3, 3))(tokens), expected)


@pytest.mark.slow
def test_vit_max_trains_and_round_trips(tmp_path: object) -> None:
    model, record = pfconvert.convert("vit_tiny_patch16_224", "vit-max", input_size=SIZE, img_size=64, num_classes=10)
    model.train()
    model(tiny_input(SIZE)).logsumexp(-1).mean().backward()
    assert model.blocks[1].attn.fc1.weight.grad is not None
    out = pfconvert.save(model, record, tmp_path / "vit")  # type: ignore[operator]
    loaded = pfconvert.load(out).eval()
    with torch.no_grad():
        assert torch.equal(loaded(tiny_input(SIZE)), model.eval()(tiny_input(SIZE)))


@pytest.mark.slow
def test_vit_input_size_follows_img_size_and_attention_macs_are_counted() -> None:
    from pfconvert.conversion.models import input_size
    from pfconvert.report.counting import count_macs

    vit = _vit()
    assert input_size(vit) == (3, 64, 64)  # not the pretrained config's 224
    original = count_macs(vit, (3, 64, 64)).macs
    converted = count_macs(pfconvert.convert(vit, "vit-max", input_size=SIZE)[0], SIZE).macs
    n, d = 17, 192  # 16 patches + class token, width
    attention = 12 * (2 * n * n * d)  # Q K^T and A V per block
    linear = 12 * (4 * n * d * d + 2 * n * d * 4 * d)  # qkv + proj, MLP
    assert original > attention + linear  # fused attention is counted (fvcore alone gives 0 for it)
    assert converted < original * 1.5
