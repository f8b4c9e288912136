"""Fine-tuning data: IDX and ImageFolder reading, checks before training, transforms, resumable sampling."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import FASHION_MNIST_SYSTEM, write_idx

from pfconvert.data.config import DataConfig, resolve_data_config
from pfconvert.data.datasets import open_split, resolve_source
from pfconvert.data.idx import read_idx
from pfconvert.errors import DataError
from pfconvert.recover.finetune import FinetuneConfig
from pfconvert.recover.finetune.loaders import SeededDataset, SkipSampler, prepare_data, steps_per_epoch, train_loader

_CFG32 = DataConfig((3, 32, 32), "bilinear", 1.0, "center", (0.5,) * 3, (0.5,) * 3)


def test_read_idx_plain_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = write_idx(tmp_path / f"x{compress}", array, compress=compress)
        np.testing.assert_array_equal(read_idx(path, expect_ndim=3), array)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-5], "corrupt"),
    (lambda raw: b"\x12\x34" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:6], "truncated inside its header"),
    (lambda raw: b"", "not an IDX file"),
])
def test_read_idx_reports_damage(tmp_path: Path, damage, message: str) -> None:
    raw = (write_idx(tmp_path / "ok", np.zeros((3, 2, 2), np.uint8), compress=False)).read_bytes()
    (tmp_path / "bad").write_bytes(damage(raw))
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "bad")


def test_read_idx_reports_broken_gzip(tmp_path: Path) -> None:
    raw = gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x02" + b"ab")
    (tmp_path / "x.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "x.gz")


def test_fashion_mnist_shortcut_reads_installed_files_or_says_how_to_install_them() -> None:
    if not FASHION_MNIST_SYSTEM.is_dir():
        with pytest.raises(DataError, match="install Debian's dataset-fashion-mnist or pass --data DIR"):
            resolve_source("fashion-mnist")
        return
    source = resolve_source("fashion-mnist")
    assert source.root == FASHION_MNIST_SYSTEM and source.kind == "idx"
    val = open_split(source, "val", limit=50, seed=0)
    assert len(val) == 50 and len(val.classes) == 10 and val.classes[0] == "T-shirt/top"
    image, label = val[0]
    assert image.mode == "RGB" and image.size == (28, 28) and 0 <= label < 10


@pytest.mark.slow
def test_limit_is_a_seeded_subset_covering_classes(ft_fmnist_dir: Path) -> None:
    source = resolve_source(ft_fmnist_dir)
    first, again = open_split(source, "train", 100, seed=3), open_split(source, "train", 100, seed=3)
    assert first.labels == again.labels and len(set(first.labels)) == 10
    assert open_split(source, "train", 100, seed=4).labels != first.labels


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "not found"),
    (lambda root: root, "is not a dataset"),
])
def test_resolve_source_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message):
        resolve_source(make(tmp_path))


def test_idx_count_mismatch_and_missing_split(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((3,), np.uint8))
    with pytest.raises(DataError, match="4 images but"):
        open_split(resolve_source(tmp_path), "train")
    with pytest.raises(DataError, match="no t10k-images"):
        open_split(resolve_source(tmp_path), "test")


def test_validation_is_carved_from_the_training_images_seeded(ft_fmnist_dir: Path) -> None:
    """val: a seeded share of the training images, disjoint from train; test: the t10k files, never carved."""
    source = resolve_source(ft_fmnist_dir)
    whole = open_split(source, "train", val_fraction=0.0)
    train, val = open_split(source, "train", val_fraction=0.2), open_split(source, "val", val_fraction=0.2)
    assert len(val) == round(0.2 * len(whole)) and len(train) + len(val) == len(whole)
    rows = {bytes(image) for image in whole.images}
    assert len(rows) == len(whole)  # the sample holds no duplicate images, so the check below means disjoint
    assert not {bytes(i) for i in train.images} & {bytes(i) for i in val.images}
    assert np.array_equal(open_split(source, "val", val_fraction=0.2).images, val.images)  # same seed, same split
    assert not np.array_equal(open_split(source, "val", val_fraction=0.2, seed=1).images, val.images)
    test = open_split(source, "test")
    assert len(test) == len(open_split(source, "test", val_fraction=0.5)) and "t10k" in test.description
    assert val.description.startswith("val: 20% of the training images") and train.description.startswith("train")
    with pytest.raises(DataError, match="no validation split: carve one"):
        open_split(source, "val", val_fraction=0.0)


def test_image_folder_classes_and_modes(ft_folder_dir: Path) -> None:
    """A folder with train/ and val/ but no test/: val/ is the test split, validation is carved from train/."""
    source = resolve_source(ft_folder_dir)
    train = open_split(source, "train")
    val = open_split(source, "val", classes=train.classes)
    test = open_split(source, "test", classes=train.classes)
    assert source.kind == "timm" and train.classes == ("bars", "columns", "diagonal")
    assert len(train) + len(val) == 96 and len(val) == 10 and len(test) == 24 and sorted(set(test.labels)) == [0, 1, 2]
    assert "the val/ folder" in test.description
    paths = train.paths()  # type: ignore[attr-defined]
    image, _ = train[paths.index(next(p for p in paths if p.suffix == ".png"))]
    assert image.mode == "RGB"


def test_image_folder_with_val_and_test_folders_uses_them(tmp_path: Path, ft_folder_dir: Path) -> None:
    root = Path(shutil.copytree(ft_folder_dir, tmp_path / "data"))
    shutil.copytree(root / "val", root / "test")
    source = resolve_source(root)
    assert len(open_split(source, "train")) == 96 and len(open_split(source, "val")) == 24
    assert open_split(source, "val").description == "val: the val/ folder"


@pytest.mark.parametrize("breakage, message", [
    ("corrupt", "unreadable image"),
    ("no_val", "no validation split"),
    ("no_train", "not a dataset"),
])
def test_image_folder_errors_before_training(tmp_path: Path, ft_folder_dir: Path, breakage: str, message: str) -> None:
    root = Path(shutil.copytree(ft_folder_dir, tmp_path / "data"))
    val_split = 0.1
    if breakage == "corrupt":
        (root / "train" / "bars" / "0.png").write_bytes(b"not an image at all")
    elif breakage == "no_val":
        val_split = 0.0  # no carve asked for, and val/ alone is the test split
    else:
        shutil.rmtree(root / "train")
    config = FinetuneConfig(data=str(root), batch_size=8, val_split=val_split)
    with pytest.raises(DataError, match=message):
        prepare_data(config, _CFG32, num_classes=3)


def test_a_test_class_unknown_to_training_is_refused(tmp_path: Path, ft_folder_dir: Path) -> None:
    root = Path(shutil.copytree(ft_folder_dir, tmp_path / "data"))
    extra = root / "val" / "extra"
    extra.mkdir()
    shutil.copy(next((root / "val" / "bars").glob("*.png")), extra / "x.png")
    source = resolve_source(root)
    with pytest.raises(DataError, match="the test split .* has 'extra' that the train split lacks"):
        open_split(source, "test", classes=open_split(source, "train").classes)


def test_prepare_data_checks_class_count_and_batch(ft_fmnist_dir: Path) -> None:
    data_cfg = resolve_data_config(timm.create_model("test_efficientnet", num_classes=10)).with_size(32)
    with pytest.raises(DataError, match="model has 5 classes but .* has 10; convert the model with --num-classes 10"):
        prepare_data(FinetuneConfig(data=str(ft_fmnist_dir)), data_cfg, num_classes=5)
    with pytest.raises(DataError, match="less than one batch"):
        prepare_data(FinetuneConfig(data=str(ft_fmnist_dir), batch_size=64, limit_train=100), data_cfg, 10, 2)


def test_grey_images_become_normalised_rgb_tensors_of_model_size(ft_fmnist_dir: Path) -> None:
    model = timm.create_model("test_efficientnet", num_classes=10)
    data_cfg = resolve_data_config(model).with_size(48)
    bundle = prepare_data(FinetuneConfig(data=str(ft_fmnist_dir), limit_val=4), data_cfg, 10)
    image, label = bundle.val[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and isinstance(label, int)
    mean = torch.tensor(data_cfg.mean).view(3, 1, 1)
    std = torch.tensor(data_cfg.std).view(3, 1, 1)
    raw = image * std + mean  # undo the per-channel normalisation: the three channels are the same grey image
    torch.testing.assert_close(raw[0], raw[1])
    torch.testing.assert_close(raw[1], raw[2])
    assert resolve_data_config(model).input_size == (3, 160, 160)


def test_augmentation_is_fixed_by_seed_epoch_and_index(ft_fmnist_dir: Path) -> None:
    data_cfg = resolve_data_config(timm.create_model("test_efficientnet", num_classes=10)).with_size(32)
    bundle = prepare_data(FinetuneConfig(data=str(ft_fmnist_dir), augment="timm"), data_cfg, 10)
    torch.manual_seed(123)
    a = SeededDataset(bundle.train, seed=0, epoch=1)[5][0]
    state = torch.get_rng_state()
    b = SeededDataset(bundle.train, seed=0, epoch=1)[5][0]
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())  # global RNG untouched
    assert not torch.equal(a, SeededDataset(bundle.train, seed=0, epoch=2)[5][0])


def test_resumed_epoch_yields_the_remaining_batches(ft_fmnist_dir: Path) -> None:
    data_cfg = resolve_data_config(timm.create_model("test_efficientnet", num_classes=10)).with_size(32)
    config = FinetuneConfig(data=str(ft_fmnist_dir), batch_size=32, workers=0, limit_train=160)
    bundle = prepare_data(config, data_cfg, 10)
    full = list(train_loader(bundle, config, epoch=1))
    tail = list(train_loader(bundle, config, epoch=1, skip_batches=2))
    assert len(full) == steps_per_epoch(bundle, config) == 5 and len(tail) == 3
    for (x, y), (x2, y2) in zip(full[2:], tail):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    other_epoch = list(train_loader(bundle, config, epoch=2))
    assert not torch.equal(full[0][1], other_epoch[0][1])
    assert list(SkipSampler(range(10), 7)) == [7, 8, 9]


def test_tar_archives_through_timms_factory(tmp_path: Path, ft_folder_dir: Path) -> None:
    """train.tar / val.tar in a folder (timm's tar reader); one .tar alone is a training split with no test split."""
    import tarfile

    root = tmp_path / "tars"
    root.mkdir()
    for split in ("train", "val"):
        with tarfile.open(root / f"{split}.tar", "w") as tar:
            for path in sorted((ft_folder_dir / split).rglob("*.*")):
                tar.add(path, arcname=str(path.relative_to(ft_folder_dir / split)))
    source = resolve_source(root)
    train = open_split(source, "train")
    test = open_split(source, "test", classes=train.classes)
    assert train.classes == ("bars", "columns", "diagonal") and len(train) == 86 and len(test) == 24
    assert test.description.startswith("test: the val/ folder") and sorted(set(test.labels)) == [0, 1, 2]
    image, label = train[0]
    assert image.mode == "RGB" and label in (0, 1, 2)
    single = resolve_source(root / "train.tar")
    assert len(open_split(single, "train")) == 86
    with pytest.raises(DataError, match="is one split"):
        open_split(single, "test")
