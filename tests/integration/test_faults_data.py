"""Issue 25's bad data, through the real command line and the library: renamed, missing, empty or nested class
folders, symlink loops and files in two splits, corrupt images read by loader workers, damaged and compressed tars,
image limits below 1, 16-bit images, and ``--resume`` on other data. Each ends in one ``Error:`` line naming what to
fix (or in the right result), and leaves the user's files as they were."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import refused_in_one_line, run_cli
from PIL import Image

import pfconvert
from pfconvert._files import LOCK_FILE
from pfconvert.data.datasets import open_split, resolve_source
from pfconvert.data.loaders import unwrap_worker_error
from pfconvert.errors import DataError, UsageError

ABC = ("a", "b", "c")
EVAL = ["--input-size", "32", "--workers", "0", "--batch-size", "16"]
FT = ["--input-size", "32", "--workers", "0", "--batch-size", "8", "--epochs", "1", "--kd-weight", "0",
      "--bn-recalib-images", "0", "--quiet"]


def _png(path: Path, label: int, seed: int, size: int = 12) -> Path:
    """A small RGB image whose bright band says its class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[label * 4:(label + 1) * 4] = 230
    Image.fromarray(pixels).save(path)
    return path


def _folder(root: Path, layout: dict[str, tuple[str, ...]], per_class: int = 4, seed: int = 0, size: int = 12) -> Path:
    """``root/split/class/i.png`` for each split and class of ``layout``."""
    for split, classes in layout.items():
        for label, name in enumerate(classes):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", label, seed + 100 * label + i, size)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but pfconvert's lock file) with the hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if p.name != LOCK_FILE and not p.is_symlink()}


@pytest.fixture(scope="module")
def art3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted 3-class test_efficientnet (depthwise convs -> max-pool)."""
    model, record = pfconvert.convert("test_efficientnet", "maxpool", num_classes=3)
    return pfconvert.save(model, record, tmp_path_factory.mktemp("art3") / "te3")


@pytest.fixture()
def world(art3: Path, tmp_path: Path) -> dict[str, Path]:
    art = Path(shutil.copytree(art3, tmp_path / "art"))
    return {"root": tmp_path, "art": art}


def _renamed(w: dict[str, Path]) -> str:
    return str(_folder(w["root"] / "d", {"train": ABC, "test": ("a", "b", "x")}))


def _missing(w: dict[str, Path]) -> str:
    return str(_folder(w["root"] / "d", {"train": ABC, "test": ("a", "b")}))


def _empty_class(w: dict[str, Path]) -> str:
    root = _folder(w["root"] / "d", {"train": ABC, "test": ("a", "b")})
    (root / "test" / "c").mkdir()
    return str(root)


def _val_folder_renamed(w: dict[str, Path]) -> str:
    return str(_folder(w["root"] / "d", {"train": ABC, "val": ("a", "b", "z"), "test": ABC}))


def _loop(w: dict[str, Path]) -> str:
    root = _folder(w["root"] / "d", {"train": ABC}, per_class=10)
    (root / "train" / "a" / "loop").symlink_to("..")  # train/a/loop -> train/: timm read it 40 levels deep
    return str(root)


def _test_linked_to_train(w: dict[str, Path]) -> str:
    root = _folder(w["root"] / "d", {"train": ABC, "test": ABC})
    (root / "test" / "b" / "0.png").unlink()
    os.link(root / "train" / "b" / "3.png", root / "test" / "b" / "0.png")  # the same file in train and test
    return str(root)


def _corrupt(w: dict[str, Path]) -> str:
    root = _folder(w["root"] / "d", {"train": ABC, "test": ABC})
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "test" / "b" / "bad.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) * 6 // 10])
    return str(root)  # the header is whole (it passes the up-front check); decoding fails in a loader worker


def _tar(w: dict[str, Path], damage: Callable[[bytes], bytes], name: str = "d.tar") -> str:
    source = _folder(w["root"] / "src", {"train": ABC})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted((source / "train").rglob("*.png")):
            tar.add(path, arcname=str(path.relative_to(source / "train")))
    target = w["root"] / name
    target.write_bytes(damage(buffer.getvalue()))
    return str(target)


def _loose_tar(w: dict[str, Path]) -> str:
    path = w["root"] / "loose.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(_png(w["root"] / "x.png", 0, 0), arcname="x.png")
    return str(path)


CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("4: a test class renamed (same count)", lambda w: ["eval", str(w["art"]), "--data", _renamed(w), *EVAL],
     r"the test split \(.*test\) does not have the classes of the train split: it lacks 'c' and has 'x' that the "
     r"train split lacks"),
    ("4: a val/ class renamed (finetune)", lambda w: ["finetune", str(w["art"]), "--data", _val_folder_renamed(w),
                                                      "--val-split", "0", *FT],
     r"the val split \(.*val\) does not have the classes of the train split: it lacks 'c' and has 'z'"),
    ("22: a test folder missing a class", lambda w: ["eval", str(w["art"]), "--data", _missing(w), *EVAL],
     r"the test split \(.*test\) does not have the classes of the train split: it lacks 'c';"),
    ("22: an empty test class folder", lambda w: ["eval", str(w["art"]), "--data", _empty_class(w), *EVAL],
     r"it lacks 'c' \(an empty folder\)"),
    ("5: a symlink loop (finetune)", lambda w: ["finetune", str(w["art"]), "--data", _loop(w), *FT],
     r"train/a/loop is a link to .*/train, a folder read already \(a symlink loop"),
    ("5: a symlink loop (eval --split train)", lambda w: ["eval", str(w["art"]), "--data", _loop(w), "--split",
                                                          "train", *EVAL], r"a symlink loop"),
    ("5: a test file hard-linked into train", lambda w: ["eval", str(w["art"]), "--data", _test_linked_to_train(w),
                                                         *EVAL],
     r"1 file\(s\) of the test split are also in the train split .*e.g. .*/test/b/0.png is .*/train/b/3.png"),
    ("7: a truncated .tar", lambda w: ["eval", str(w["art"]), "--data", _tar(w, lambda raw: raw[:len(raw) // 2]),
                                       "--split", "train", *EVAL], r"d.tar is (truncated|not a tar archive, or it is "
                                                                   r"damaged or truncated)"),
    ("7: a .tar cut at a member boundary", lambda w: ["eval", str(w["art"]), "--data", _tar(
        w, lambda raw: raw[:len(raw) - 10240]), "--split", "train", *EVAL], r"d.tar is truncated \(it ends at byte"),
    ("7: a text file named .tar", lambda w: ["eval", str(w["art"]), "--data", _tar(
        w, lambda raw: b"not a tar\n" * 100), "--split", "train", *EVAL], r"d.tar is not a tar archive"),
    ("7: gzip data named .tar", lambda w: ["eval", str(w["art"]), "--data", _tar(w, gzip.compress), "--split", "train",
                                           *EVAL], r"d.tar is gzip-compressed; .* decompress it first"),
    ("7: a .tar.gz", lambda w: ["eval", str(w["art"]), "--data", _tar(w, gzip.compress, "d.tar.gz"), "--split",
                                "train", *EVAL], r"d.tar.gz is a compressed tar; .* decompress it first"),
    ("7: a .tgz", lambda w: ["eval", str(w["art"]), "--data", _tar(w, gzip.compress, "d.tgz"), "--split", "train",
                             *EVAL], r"d.tgz is a compressed tar"),
    ("7: a tar of images outside class folders", lambda w: ["eval", str(w["art"]), "--data", _loose_tar(w), "--split",
                                                            "train", *EVAL], r"holds images outside class folders"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_one_line_and_changes_nothing(case: str, argv: Callable, message: str, world: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    args = argv(world)
    before = _snapshot(world["root"])
    refused_in_one_line(args, message, capsys, monkeypatch)
    assert _snapshot(world["root"]) == before


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 0])
def test_a_corrupt_image_read_by_a_worker_is_the_same_one_line(workers: int, world: dict[str, Path],
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """6: with loader workers, torch re-raised the DataError with the worker's 25-line traceback."""
    data = _corrupt(world)
    code, out, err = run_cli(["eval", str(world["art"]), "--data", data, "--input-size", "32", "--workers",
                              str(workers)], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err + out and "worker" not in err, err
    assert [line for line in lines if line.startswith("Error:")] == lines[-1:]
    assert re.fullmatch(r"Error: cannot decode image .*test/b/bad.jpg: image file is truncated .*; remove or replace "
                        r"the file", lines[-1]), err


def test_a_worker_error_is_unwrapped_to_its_own_line() -> None:
    wrapped = DataError("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 3, in load\n    raise DataError(...)\n"
                        "pfconvert.errors.DataError: cannot decode image /d/x.png: broken; remove it\n")
    error = unwrap_worker_error(wrapped)
    assert type(error) is DataError and str(error) == "cannot decode image /d/x.png: broken; remove it"
    plain = DataError("cannot decode image /d/x.png")
    assert unwrap_worker_error(plain) is plain


def test_nested_class_folders_take_the_top_level_folders_class(tmp_path: Path) -> None:
    """4: timm named ``test/b/zz/x.png`` class ``zz`` (sorted after ``c``: labels shifted); the class is ``b``."""
    root = _folder(tmp_path / "d", {"train": ABC, "test": ("a", "c")})
    for i in range(3):
        _png(root / "test" / "b" / "zz" / f"{i}.png", 1, i)
    test = open_split(resolve_source(root), "test")
    paths = test.paths()  # type: ignore[attr-defined]
    assert test.classes == ABC
    assert {path.relative_to(root / "test").parts[0]: test.labels[i] for i, path in enumerate(paths)} == {
        "a": 0, "b": 1, "c": 2}


def test_a_symlinked_class_folder_is_read_once(tmp_path: Path) -> None:
    """5: directory links are followed (a class folder may be one), each real folder once."""
    root = _folder(tmp_path / "d", {"train": ("a", "b")}, per_class=5)
    shutil.move(root / "train" / "b", tmp_path / "elsewhere")
    (root / "train" / "b").symlink_to(tmp_path / "elsewhere")
    train = open_split(resolve_source(root), "train", val_fraction=0.0)
    assert len(train) == 10 and train.classes == ("a", "b") and sorted(train.labels) == [0] * 5 + [1] * 5


def test_a_file_linked_twice_into_train_cannot_land_in_val_and_train(tmp_path: Path) -> None:
    """5: a carved val is checked against the rest of train by file identity."""
    root = tmp_path / "d"
    _png(root / "train" / "a" / "x.png", 0, 0)
    (root / "train" / "b").mkdir()
    os.link(root / "train" / "a" / "x.png", root / "train" / "b" / "x.png")
    with pytest.raises(DataError, match=r"1 file\(s\) of the val split are also in the train split"):
        open_split(resolve_source(root), "val", val_fraction=0.5)


def test_an_empty_training_class_folder_is_named_with_the_class_count(tmp_path: Path, world: dict[str, Path],
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "d", {"train": ("a", "b")}, per_class=8)
    (root / "train" / "c").mkdir()
    code, _, err = run_cli(["finetune", str(world["art"]), "--data", str(root), *FT], capsys, monkeypatch)
    assert code == 1 and err.strip().endswith("has 2 (class folder(s) 'c' hold no images); convert the model with "
                                              "--num-classes 2"), err


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_evaluate_artifact_refuses_a_limit_below_one(limit: object, world: dict[str, Path]) -> None:
    """19: ``limit=0`` evaluated 0 images (0.0%), ``limit=-5`` all but 5; the CLI refused both."""
    data = _folder(world["root"] / "d", {"train": ABC, "test": ABC})
    if isinstance(limit, int) and not isinstance(limit, bool):
        error, message = DataError, rf"^limit must be a positive number of images \(or None for all\), got {limit}$"
    else:  # the public API's argument check (pfconvert._api) refuses a value of the wrong type first
        error, message = UsageError, rf"argument 'limit' takes an int or None, not {type(limit).__name__}"
    with pytest.raises(error, match=message):
        pfconvert.evaluate_artifact(world["art"], str(data), limit=limit, workers=0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="limit must be a positive number"):
        open_split(resolve_source(data), "test", limit=limit)  # type: ignore[arg-type]


def test_a_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    """24: PIL's own conversion clipped 16-bit values at 255 (a 0..65535 ramp became black and white)."""
    root = _folder(tmp_path / "d", {"train": ABC})
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    path = root / "train" / "b" / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"  # a real 16-bit PNG
    train = open_split(resolve_source(root), "train", val_fraction=0.0)
    index = train.paths().index(path)  # type: ignore[attr-defined]
    train.mode = "L"
    grey = np.asarray(train.load(index))
    np.testing.assert_array_equal(grey, np.round(ramp / 257).astype(np.uint8))
    assert len(np.unique(grey)) == 256
    train.mode = "RGB"
    np.testing.assert_array_equal(np.asarray(train.load(index))[..., 1], grey)


def test_32_bit_and_float_pixels_are_refused(tmp_path: Path) -> None:
    from pfconvert.data.checks import to_mode

    with pytest.raises(DataError, match="holds 32-bit integer pixels"):
        to_mode(Image.fromarray(np.full((4, 4), 70000, np.int32), "I"), "L", "x.png")
    with pytest.raises(DataError, match="holds floating-point pixels"):
        to_mode(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "L", "x.png")


@pytest.mark.slow
def test_resume_on_other_data_is_refused_and_eval_checks_the_recorded_classes(
        world: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """25: ``--resume --data OTHER`` with as many images was accepted; 4: after a fine-tune, eval compares the data's
    classes with those recorded in finetune.json."""
    art, root = world["art"], world["root"]
    data = _folder(root / "one", {"train": ABC}, per_class=8)
    other = _folder(root / "two", {"train": ABC}, per_class=8, seed=7, size=14)  # other images, same names and count
    code, _, err = run_cli(["finetune", str(art), "--data", str(data), "--max-steps", "1", *FT], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads((art / "finetune.json").read_text())["classes"] == list(ABC)
    before = _snapshot(root)
    code, out, err = run_cli(["finetune", str(art), "--resume", "--data", str(other)], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err + out
    assert err.strip().splitlines()[-1] == (
        "Error: two is not the data the saved run trained on (the training images' names, sizes, pixels or labels "
        "differ); resume with the same --data (and limits), or start again with --overwrite")
    assert _snapshot(root) == before
    renamed = _folder(root / "renamed", {"train": ("a", "b", "x"), "test": ("a", "b", "x")})
    code, _, err = run_cli(["eval", str(art), "--data", str(renamed), *EVAL], capsys, monkeypatch)
    assert code == 1 and "does not have the classes of the fine-tuned model (finetune.json): it lacks 'c' and has " \
                         "'x' that the fine-tuned model (finetune.json) lacks" in err, err
    moved = Path(shutil.copytree(data, root / "moved"))  # the same data elsewhere: resumable
    code, _, err = run_cli(["finetune", str(art), "--resume", "--data", str(moved)], capsys, monkeypatch)
    assert code == 0, err
