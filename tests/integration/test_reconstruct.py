"""Least-squares reconstruction of the layer after each replaced op: which layers, exactness, and the fine-tune hook."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_input
from torch import nn

import pfconvert
from pfconvert.conversion.models import create_model
from pfconvert.recover.bn import recalibrate_batchnorm
from pfconvert.recover.finetune import FinetuneConfig, finetune
from pfconvert.recover.precision import resolve_precision
from pfconvert.recover import refit
from pfconvert.recover.refit import changed_paths, find_consumers, reconstruct


class _Block(nn.Module):
    """1x1 expand -> per-channel scale (a 1x1 depthwise conv) -> 1x1 project (with bias) + residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(4, 8, 1, bias=False)
        self.conv_dw = nn.Conv2d(8, 8, 1, groups=8, bias=True)
        self.conv_pwl = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_pwl(self.conv_dw(torch.relu(self.conv_pw(x))))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Sequential(_Block(), _Block()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _pair(name: str, rule: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    kwargs = {"zero_init_last": False} if name.startswith("resnet") else {}  # else every residual branch outputs 0
    original = create_model(name, num_classes=10, **kwargs).eval()
    converted, _ = pfconvert.convert(original, rule, input_size=(3, 32, 32))
    return converted.eval(), original


def test_an_exact_fit_is_found_when_one_exists() -> None:
    """Dropping a per-channel affine op is undone exactly by folding it into the next 1x1 conv and its bias."""
    torch.manual_seed(0)
    original = _Net().eval()
    converted = copy.deepcopy(original)
    for block in converted.blocks[0]:
        block.conv_dw = nn.Identity()
    x = torch.randn(16, 4, 6, 6)
    assert (converted(x) - original(x)).abs().max() > 1e-2
    fits = reconstruct(converted, original, list(x.split(8)), ridge=0.0)
    assert [f.path for f in fits] == ["blocks.0.0.conv_pwl", "blocks.0.1.conv_pwl"]
    assert all(f.after == (f.path.replace("conv_pwl", "conv_dw"),) for f in fits)
    # the error is computed from float32 products summed in float64: exact to about 1e-3 (the outputs match below)
    assert all(f.rel_error_before > 0.05 and f.rel_error < 1e-3 for f in fits)
    torch.testing.assert_close(converted(torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(1))),
                               original(torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(1))),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "rule", "reader", "count"), [
    ("mobilenetv2_050", "maxpool", r"blocks\.\d+\.\d+\.conv_(pwl|pw)$", 17),
    ("resnet26", "r50-max", r"layer\d\.\d\.conv3$", 8),
])
@pytest.mark.slow
def test_the_reader_of_each_replaced_op_is_refit(name: str, rule: str, reader: str, count: int) -> None:
    converted, original = _pair(name, rule)
    consumers = find_consumers(converted, original, (3, 32, 32))
    assert len(consumers) == count and all(re.search(reader, path) for path in consumers)
    x = tiny_input((3, 32, 32), batch=8, seed=1)
    gap_before = (converted(x) - original(x)).norm()
    fits = reconstruct(converted, original, list(tiny_input((3, 32, 32), batch=64, seed=2).split(32)))
    assert [f.path for f in fits] == list(consumers)
    assert all(f.norm == re.sub(r"conv(\d|_pwl|_pw)$", lambda m: {"3": "bn3", "_pwl": "bn3", "_pw": "bn2"}[m.group(1)],
                                f.path) for f in fits)
    assert all(f.rel_error <= f.rel_error_before for f in fits)
    assert sum(f.rel_error for f in fits) < 0.8 * sum(f.rel_error_before for f in fits)
    assert (converted(x) - original(x)).norm() < gap_before


@pytest.mark.parametrize(("name", "rule", "segments"), [
    ("mobilenetv2_050", "maxpool", [("blocks.0.0", "blocks.6.0")]),  # nested stages: one chain of blocks
    ("resnet26", "r50-max", [("layer1.0", "layer4.1")]),  # layer1.1 -> layer2.0 across the stage containers
    ("convnext_atto", "maxpool", [(f"stages.{i}.blocks.0", f"stages.{i}.blocks.{last}")
                                  for i, last in enumerate((1, 1, 5, 1))]),  # one run per stage: downsample between
])
def test_refits_from_cached_activations_equal_refits_from_partial_forwards(
        name: str, rule: str, segments: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (chained blocks, activations cached per block) fits the same weights as one partial forward of
    both models per layer; convnext's downsample layers between stages split its chain into one run per stage."""
    converted, original = _pair(name, rule)
    batches = list(tiny_input((3, 32, 32), batch=48, seed=2).split(16))
    from pfconvert.graph.dataflow import trace_dataflow
    flow = trace_dataflow(converted, (3, 32, 32))
    steps = refit._schedule(flow, refit._consumers(flow, converted, original), 48, batches[0])
    assert [(s.blocks[0], s.blocks[-1]) for s in steps] == segments
    slow = copy.deepcopy(converted)
    fits = reconstruct(converted, original, batches)
    monkeypatch.setattr(refit, "_cache_budget", lambda _device: 0)  # no room for a cache: partial forwards only
    assert all(isinstance(s, tuple) for s in refit._schedule(flow, refit._consumers(flow, slow, original), 48,
                                                             batches[0]))
    slow_fits = reconstruct(slow, original, batches)
    assert [f.path for f in fits] == [f.path for f in slow_fits] and fits
    for fast, ref in zip(fits, slow_fits):
        assert fast.rel_error == pytest.approx(ref.rel_error, rel=1e-3, abs=1e-6)
    for (path, mine), theirs in zip(converted.state_dict().items(), slow.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-4, msg=path)


def test_a_chain_the_blocks_do_not_compute_falls_back_to_partial_forwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that read the previous block's output in the trace (the same tensor) but where the forward changes it in
    place between them fail the numeric check, and their layers are refit from partial forwards of both models."""

    class Scaled(_Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            stage = self.blocks[0]
            y = stage[0](x)
            y.mul_(2.0)
            return stage[1](y)

    torch.manual_seed(0)
    original = Scaled().eval()
    converted = copy.deepcopy(original)
    for block in converted.blocks[0]:
        block.conv_dw = nn.Identity()
    partial = []
    monkeypatch.setattr(refit, "_refit", lambda *a, _f=refit._refit: partial.append(a[2]) or _f(*a))
    x = torch.randn(16, 4, 6, 6)
    fits = reconstruct(converted, original, list(x.split(8)), ridge=0.0)
    assert partial == ["blocks.0.0.conv_pwl", "blocks.0.1.conv_pwl"]
    assert all(f.rel_error < 1e-3 for f in fits) and len(fits) == 2
    torch.testing.assert_close(converted(x), original(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "rule", "reader", "count"), [
    ("regnetx_002", "bottleneck-max", r"^s\d\.b\d+\.conv3\.conv$", 13),  # RegNet's blocks are named s1.b1
    ("dla60", "bottleneck-max", r"^level\d\.(tree\d\.)+conv3$", 16),  # no block in the name: its residual branch
])
def test_readers_are_found_in_regnet_and_dla_blocks(name: str, rule: str, reader: str, count: int) -> None:
    converted, original = _pair(name, rule)
    consumers = find_consumers(converted, original, (3, 32, 32))
    assert len(consumers) == count and all(re.search(reader, path) for path in consumers)


@pytest.mark.slow
def test_batchnorm_re_estimation_keeps_the_statistics_reconstruction_set() -> None:
    converted, original = _pair("mobilenetv2_050", "maxpool")
    fits = reconstruct(converted, original, [tiny_input((3, 32, 32), batch=32, seed=2)])
    kept = [converted.get_submodule(f.norm) for f in fits if f.norm]
    saved = {id(bn): bn.running_mean.clone() for bn in kept}
    other = converted.get_submodule("blocks.1.0.bn1")
    before = other.running_mean.clone()
    batches = [(tiny_input((3, 32, 32), batch=16, seed=3), torch.zeros(16))]
    assert recalibrate_batchnorm(converted, batches, resolve_precision(torch.device("cpu")), 1, keep=kept) == 16
    assert all(torch.equal(bn.running_mean, saved[id(bn)]) for bn in kept) and len(kept) == len(fits)
    assert not torch.equal(other.running_mean, before) and not converted.training and not kept[0].training


def test_mixers_with_their_own_weights_are_left_to_fine_tuning() -> None:
    original = create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2).eval()
    converted, _ = pfconvert.convert(original, "vit-max", input_size=(3, 32, 32))
    assert changed_paths(converted, original) == []
    assert reconstruct(converted.eval(), original, [tiny_input((3, 32, 32), batch=4)]) == []


@pytest.mark.slow
def test_fine_tuning_starts_from_the_reconstructed_student(ft_artifact: Path, ft_fmnist_dir: Path,
                                                           tmp_path: Path) -> None:
    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    config = FinetuneConfig(data=str(ft_fmnist_dir), epochs=1, batch_size=32, img_size=32, limit_train=64,
                            limit_val=32, workers=0, bn_recalib_images=0, reconstruct_images=64, max_steps=1)
    finetune(art, config)
    start = json.loads((art / "metrics.jsonl").read_text().splitlines()[0])
    fit = start["reconstruction"]
    assert start["event"] == "start" and fit["images"] == 64 and fit["layers"] > 0
    assert fit["rel_error_after"] < fit["rel_error_before"] and "reconstructed" in start


def test_reconstruction_capacity_counts_the_images_and_both_models_activations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    converted, original = _pair("mobilenetv2_050", "maxpool")
    monkeypatch.setattr(refit, "_cache_budget", lambda _device: 10 ** 8)
    per_image = 4 * (3 * 32 * 32 + 2 * 16 * 16 * 16)  # float32 image + both models' stem outputs (blocks.0.0's input)
    assert refit.reconstruction_capacity(converted, original, (3, 32, 32)) == 10 ** 8 // per_image


@pytest.mark.slow
def test_fine_tuning_reconstructs_on_what_fits_in_memory(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """More reconstruction images than the cache holds: the run uses as many as it holds (and says so), instead of
    falling back to partial forwards per layer; the record keeps the seconds it took."""
    from pfconvert.recover.finetune import runner

    monkeypatch.setattr(runner, "reconstruction_capacity", lambda *args: 24)
    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    config = FinetuneConfig(data=str(ft_fmnist_dir), epochs=1, batch_size=32, img_size=32, limit_train=64,
                            limit_val=32, workers=0, bn_recalib_images=0, reconstruct_images=64, max_steps=1)
    finetune(art, config)
    fit = json.loads((art / "metrics.jsonl").read_text().splitlines()[0])["reconstruction"]
    assert fit["images"] == 24 and fit["seconds"] >= 0


@pytest.mark.slow
def test_block_wise_distillation_brings_each_block_closer_to_the_original() -> None:
    """Each block holding a replaced op is trained in forward order, is kept only when its output error fell, and is
    left in eval mode without gradients (its effect on accuracy: docs/finetuning.md)."""
    converted, original = _pair("mobilenetv2_050", "maxpool")
    batches = list(tiny_input((3, 32, 32), batch=64, seed=2).split(32))
    blocks: list[refit.BlockFit] = []
    fits = reconstruct(converted, original, batches, block_steps=100, block_lr=3e-3, blocks=blocks)
    assert len(fits) == 17 and [b.path for b in blocks] == sorted({f.path.rsplit(".", 1)[0] for f in fits},
                                                                   key=[f.path.rsplit(".", 1)[0] for f in fits].index)
    assert all(b.steps == 100 and b.rel_error <= b.rel_error_before for b in blocks)  # or put back as it was
    assert sum(b.rel_error for b in blocks) < sum(b.rel_error_before for b in blocks)
    assert not converted.training and all(p.grad is None for p in converted.parameters())


@pytest.mark.slow
def test_a_run_from_the_same_start_reads_it_and_trains_as_if_it_had_computed_it(
        ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoints/start.pt: a second run with the same start settings (another learning rate or budget) reads the
    start instead of reconstructing again, and ends with the weights it would have had; other start settings or
    other weights compute it again."""
    from safetensors.torch import load_file

    from pfconvert.recover.finetune import runner

    calls: list[int] = []
    real = runner.reconstruct
    monkeypatch.setattr(runner, "reconstruct", lambda *a, **k: calls.append(1) or real(*a, **k))
    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    base = dict(data=str(ft_fmnist_dir), epochs=1, batch_size=32, img_size=32, limit_train=96, limit_val=32,
                workers=0, bn_recalib_images=32, reconstruct_images=64, block_steps=3, lr=1e-3)

    def run(**changes: object) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        finetune(art, FinetuneConfig(**{**base, **changes}), overwrite=True)
        start = json.loads((art / "metrics.jsonl").read_text().splitlines()[0])
        return load_file(art / "finetuned.safetensors"), start

    computed, start = run()
    assert len(calls) == 1 and (art / "checkpoints" / "start.pt").is_file()
    read, read_start = run()
    assert len(calls) == 1 and read_start == start  # read, not computed
    assert computed.keys() == read.keys() and all(torch.equal(computed[k], read[k]) for k in computed)
    run(lr=3e-4, train_images=40)  # settings that act after the start only: read
    assert len(calls) == 1
    run(reconstruct_images=32)  # another start: computed, and kept in its place
    run(reconstruct_images=32)
    assert len(calls) == 2


def test_block_steps_need_reconstruction_images() -> None:
    with pytest.raises(pfconvert.errors.TrainingError, match="block_steps trains on the reconstruction images"):
        FinetuneConfig(data="x", block_steps=10)
    assert FinetuneConfig(data="x", block_steps=10, reconstruct_images=64).block_lr == 1e-3


def test_the_speed_benchmark_tables_both_paths_with_equal_weights(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_speed", Path(__file__).resolve().parents[2]
                                                  / "benchmarks" / "reconstruct_speed.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    bench.main(["--models", "mobilenetv2_050:maxpool", "--size", "32", "--images", "32", "--batch-size", "16",
                "--rounds", "1", "--block-steps", "2"])
    out = capsys.readouterr().out
    assert "Machine: " in out and "ISA" in out
    row = next(line for line in out.splitlines() if line.startswith("| mobilenetv2_050:maxpool"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "17" and float(cells[5]) < 1e-3 and float(cells[6]) > 0  # same weights on both paths
