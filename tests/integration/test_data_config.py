"""One data config, the user's: resolved at convert (timm's config plus the options), stored in the recipe, used by
fine-tune, eval, sensitivity and report; small images resized whole; the size a fine-tune trained at used after it;
honest split names; image budgets; progress phases."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import run_cli
from PIL import Image
from safetensors.torch import save_file

import pfconvert
from pfconvert._progress import Phases
from pfconvert.data import DataConfig, resolve_data_config
from pfconvert.errors import DataError
from pfconvert.recover.finetune import FinetuneConfig

MEAN, STD = (0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)  # the user's own normalisation (Fashion-MNIST's)
SIZE = 40


def _idx(root: Path, stem: str) -> np.ndarray:
    raw = gzip.decompress((root / f"{stem}.gz").read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _user_batch(images: np.ndarray) -> torch.Tensor:
    """The user's own pipeline: the whole 28 px image resized to SIZE (bilinear), grey to RGB, the user's mean/std."""
    arrays = [np.asarray(Image.fromarray(im).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def user_model(ft_fmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A small model trained in the user's own loop and scored there on the test split: (checkpoint, top-1)."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=10)
    x, y = _user_batch(_idx(ft_fmnist_dir, "train-images-idx3-ubyte")), torch.from_numpy(
        _idx(ft_fmnist_dir, "train-labels-idx1-ubyte").astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    tx = _user_batch(_idx(ft_fmnist_dir, "t10k-images-idx3-ubyte"))
    ty = torch.from_numpy(_idx(ft_fmnist_dir, "t10k-labels-idx1-ubyte").astype(np.int64))
    with torch.no_grad():
        top1 = 100.0 * float((model(tx).argmax(-1) == ty).float().mean())
    path = tmp_path_factory.mktemp("user") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, top1


@pytest.mark.slow
def test_eval_scores_the_users_model_as_the_users_loop_does(user_model: tuple[Path, float], ft_fmnist_dir: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint, own_top1 = user_model
    art = tmp_path / "art"
    code, _, err = run_cli(["convert", "test_efficientnet", "--checkpoint", str(checkpoint), "--num-classes", "10",
                            "--input-size", f"3,{SIZE},{SIZE}", "--interpolation", "bilinear",
                            "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "--out", str(art)],
                           capsys, monkeypatch)
    assert code == 0, err
    assert f"input: 3x{SIZE}x{SIZE}, bilinear, center crop 0.95" in err  # recorded as given, timm's crop kept
    code, out, err = run_cli(["eval", str(art), "--data", str(ft_fmnist_dir), "--original", "--workers", "0",
                              "--json"], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out)
    assert report["split"] == "test" and "t10k" in report["split_description"]
    assert f"3x{SIZE}x{SIZE}, bilinear, whole image" in err and "smaller than the model's input" in err
    assert abs(report["metrics"]["original"]["top1"] - own_top1) <= 0.1, (report, own_top1)
    assert report["metrics"]["original"]["count"] == 160


def test_a_chosen_crop_is_kept_even_for_small_images() -> None:
    base = DataConfig((3, 64, 64), "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3)
    whole, note = base.for_images((28, 28))
    assert (whole.crop_pct, whole.crop_mode) == (1.0, "squash") and note and "resized whole" in note
    assert base.for_images((300, 200)) == (base, None)
    chosen = DataConfig((3, 64, 64), "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3, crop_chosen=True)
    assert chosen.for_images((28, 28)) == (chosen, None)
    assert DataConfig.from_dict(chosen.to_dict()) == chosen and DataConfig.from_dict(chosen.to_dict()).crop_chosen


def test_overrides_are_checked() -> None:
    model = timm.create_model("test_efficientnet", num_classes=10)
    cfg = resolve_data_config(model, interpolation="bilinear", crop_pct=1.0, crop_mode="squash", mean=(0.5,),
                              std=(0.25, 0.25, 0.25))
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.describe().startswith("3x160x160, bilinear, whole image")
    with pytest.raises(DataError, match="--mean has 2 values; the model takes 3 channel"):
        resolve_data_config(model, mean=(0.5, 0.5))
    with pytest.raises(DataError, match="must be finite, std positive"):
        resolve_data_config(model, std=(0.0, 1.0, 1.0))


@pytest.mark.slow
def test_eval_and_report_use_the_size_a_fine_tune_trained_at(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    assert pfconvert.load_artifact(art).recipe.data_config.input_size == (3, 160, 160)
    result = pfconvert.finetune(art, FinetuneConfig(data=str(ft_fmnist_dir), img_size=32, batch_size=32, workers=0,
                                                    max_steps=1, limit_val=32, bn_recalib_images=0,
                                                    eval_teacher=False))
    assert result.data_config["input_size"] == [3, 32, 32] and result.splits["val"].startswith("val: 10% of the")
    code, out, err = run_cli(["eval", str(art), "--data", str(ft_fmnist_dir), "--limit", "16", "--workers", "0"],
                             capsys, monkeypatch)
    assert code == 0, err
    assert "input 3x32x32" in out and "(as fine-tuned (finetune.json))" in err
    pair = pfconvert.report.resolve_pair(str(art))
    assert pair.input_size == (3, 32, 32) and "as fine-tuned" in (pair.note or "")


class _Recorder(Phases):
    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None, int]] = []

    def phase(self, name, total=None, unit=""):  # type: ignore[no-untyped-def,override]
        import contextlib

        record = [name, total, 0]

        @contextlib.contextmanager
        def run():  # type: ignore[no-untyped-def]
            yield lambda n=1: record.__setitem__(2, record[2] + n)
            self.phases.append(tuple(record))  # type: ignore[arg-type]

        return run()


def test_eval_reports_progress_per_model(ft_artifact: Path, ft_fmnist_dir: Path) -> None:
    recorder = _Recorder()
    pfconvert.evaluate_artifact(ft_artifact, str(ft_fmnist_dir), limit=24, workers=0, original=True, img_size=32,
                                progress=recorder)
    assert recorder.phases == [("evaluating the student model", 24, 24), ("evaluating the original model", 24, 24)]


@pytest.mark.slow
def test_a_budget_in_images_sets_the_steps(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path) -> None:
    import shutil

    from pfconvert.recover.finetune.progress import Reporter

    class Phased(Reporter, _Recorder):
        pass

    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    reporter = Phased()
    reporter.phases = []
    result = pfconvert.finetune(art, FinetuneConfig(data=str(ft_fmnist_dir), img_size=32, batch_size=32, workers=0,
                                                    train_images=70, limit_val=32, bn_recalib_images=64,
                                                    eval_teacher=False), reporter=reporter)
    assert result.status == "completed" and result.global_step == result.total_steps == 3  # ceil(70 / 32)
    names = [name for name, _, _ in reporter.phases]
    assert names[:2] == ["validating the student as converted",
                         "re-estimating BatchNorm statistics (loss before, statistics, loss after)"]
    assert reporter.phases[1][1] == reporter.phases[1][2] == 3 * 64  # sized in images, every image counted
