"""Fuzzing the data readers (hypothesis, bounded): random image folders (corrupt, empty, 16-bit and oddly named
files, empty class folders, links, loops, hard links across splits), random or damaged ``.tar`` files and random or
damaged IDX files open as a valid dataset whose every image loads, or fail with a one-line ``DataError``; never
another exception, never a hang."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import struct
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pfconvert.data.datasets import SPLITS, ImageSamples, open_split, resolve_source
from pfconvert.errors import DataError

pytestmark = pytest.mark.slow
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png_bytes(seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (6, 6), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


FILE_KINDS = ["png", "png", "jpg", "grey", "16bit", "corrupt", "truncated", "empty", "text.png", "odd_ext",
              "upper_ext", "hidden", "link_dir_up", "link_dir_sibling", "link_file_other_split", "broken_link",
              "hard_link_other_split", "empty_dir"]
ENTRY = st.tuples(st.sampled_from(["train", "val", "test"]), st.sampled_from(["a", "b", "c", ""]),
                  st.sampled_from(["", "sub", "sub/deeper"]), st.sampled_from(FILE_KINDS), st.integers(0, 9))
FOLDERS = st.lists(ENTRY, min_size=1, max_size=12)


def _build_folder(root: Path, entries: list[tuple[str, str, str, str, int]]) -> None:
    for n, (split, cls, depth, kind, seed) in enumerate(entries):
        folder = root / split / cls / depth
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{n}.png"
        target = folder / name
        if kind in ("png", "grey", "16bit"):
            target.write_bytes(_png_bytes(seed, {"png": "RGB", "grey": "L", "16bit": "I;16"}[kind]))
        elif kind == "jpg":
            (folder / f"{n}.jpg").write_bytes(_jpeg_bytes(seed))
        elif kind == "corrupt":
            raw = bytearray(_png_bytes(seed))
            raw[40 + seed] ^= 0xFF
            target.write_bytes(bytes(raw))
        elif kind == "truncated":
            (folder / f"{n}.jpg").write_bytes(_jpeg_bytes(seed)[:200 + 40 * seed])
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "text.png":
            target.write_text("not an image\n")
        elif kind == "odd_ext":
            (folder / f"{n}.tif").write_bytes(_png_bytes(seed))
        elif kind == "upper_ext":
            (folder / f"{n}.PNG").write_bytes(_png_bytes(seed))
        elif kind == "hidden":
            (folder / f"._{n}.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        elif kind == "link_dir_up":
            (folder / f"up{n}").symlink_to("..")
        elif kind == "link_dir_sibling":
            (folder / f"sib{n}").symlink_to(root / "train")
        elif kind == "broken_link":
            target.symlink_to(root / "nowhere.png")
        elif kind in ("link_file_other_split", "hard_link_other_split"):
            other = root / ("train" if split != "train" else "test") / "a" / f"shared{n}.png"
            other.parent.mkdir(parents=True, exist_ok=True)
            other.write_bytes(_png_bytes(seed))
            if kind == "hard_link_other_split":
                os.link(other, target)
            else:
                target.symlink_to(other)
        elif kind == "empty_dir":
            (folder / f"empty{n}").mkdir()


def _alarm(*_: object) -> None:
    raise TimeoutError("reading the data took more than 60 s")


@contextmanager
def _deadline(seconds: int = 60) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _read_everything(data: str | Path, val_fraction: float) -> list[ImageSamples]:
    """Every split that opens, with every image loaded; DataError (one line) is the only failure allowed."""
    opened = []
    with _deadline():
        try:
            source = resolve_source(data)
        except DataError as exc:
            assert "\n" not in str(exc)
            return opened
        for split in SPLITS:
            try:
                dataset = open_split(source, split, val_fraction=val_fraction)
                dataset.mode = "RGB"
                for index in range(len(dataset)):
                    image = dataset.load(index)
                    assert image.mode == "RGB" and min(image.size) > 0
                    assert 0 <= dataset.labels[index] < len(dataset.classes)
            except DataError as exc:
                assert "\n" not in str(exc), str(exc)
            else:
                opened.append(dataset)
    return opened


@SETTINGS
@given(FOLDERS, st.sampled_from([0.0, 0.3]))
def test_random_image_folders_open_or_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                        entries: list, val_fraction: float) -> None:
    root = tmp_path_factory.mktemp("folder")
    _build_folder(root, entries)
    seen: set[tuple[int, int]] = set()
    for dataset in _read_everything(root, val_fraction):
        paths = dataset.paths()  # type: ignore[attr-defined]
        files = {(os.stat(path).st_dev, os.stat(path).st_ino) for path in paths}
        assert len(files) == len(paths) and not files & seen  # no file twice: in a split (a loop) or in two splits
        seen |= files
        for path, label in zip(paths, dataset.labels):  # the class is the top-level folder, however deep the image
            assert dataset.classes[label] == path.relative_to(root).parts[1]
        assert dataset.fingerprint() == dataset.fingerprint()
    shutil.rmtree(root)


def _good_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for n, cls in enumerate(["a", "a", "b", "b", "c"]):
            data = _png_bytes(n)
            info = tarfile.TarInfo(f"{cls}/{n}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GOOD_TAR = _good_tar()
TAR_DAMAGE = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, len(GOOD_TAR))),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(GOOD_TAR) - 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("gzip"), st.integers(0, 9)),
    st.tuples(st.just("junk"), st.binary(max_size=600)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=600)),
)


def _damage(raw: bytes, damage: tuple) -> bytes:
    kind, arg = damage
    if kind == "cut":
        return raw[:arg]
    if kind == "flip":
        data = bytearray(raw)
        for position, mask in arg if data else ():
            data[position % len(data)] ^= mask
        return bytes(data)
    if kind == "gzip":
        return gzip.compress(raw, compresslevel=arg)
    if kind == "junk":
        return arg
    return raw + arg


@SETTINGS
@given(TAR_DAMAGE, st.sampled_from(["one", "folder"]))
def test_random_or_damaged_tars_open_or_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory, damage: tuple,
                                                         layout: str) -> None:
    root = tmp_path_factory.mktemp("tar")
    path = root / "data.tar" if layout == "one" else root / "train.tar"
    path.write_bytes(_damage(GOOD_TAR, damage))
    for dataset in _read_everything(path if layout == "one" else root, 0.2):
        assert len(dataset) <= 5
    shutil.rmtree(root)


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + (
        array.astype(array.dtype.newbyteorder(">")).tobytes())


IDX_DAMAGE = st.tuples(st.sampled_from(["images", "labels", "test-images", "test-labels"]), TAR_DAMAGE.filter(
    lambda d: d[0] != "gzip"), st.booleans())


@SETTINGS
@given(st.lists(IDX_DAMAGE, max_size=2), st.sampled_from(["uint8", "int16", "float32"]), st.integers(0, 40))
def test_random_or_damaged_idx_files_open_or_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                              damages: list, label_dtype: str, top: int) -> None:
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(top)
    files = {}
    for prefix, count in (("", 12), ("test-", 6)):
        labels = rng.integers(0, top + 1, count).astype(label_dtype)
        code = {"uint8": 0x08, "int16": 0x0B, "float32": 0x0D}[label_dtype]
        files[f"{prefix}images"] = _idx(rng.integers(0, 255, (count, 5, 5), dtype=np.uint8))
        files[f"{prefix}labels"] = _idx(labels, code)
    for name, damage, compress in damages:
        files[name] = _damage(files[name], damage)
        files[name] = gzip.compress(files[name]) if compress else files[name]
    for name, data in files.items():
        stem = ("t10k" if name.startswith("test-") else "train") + (
            "-images-idx3-ubyte" if name.endswith("images") else "-labels-idx1-ubyte")
        (root / stem).write_bytes(data)
    for dataset in _read_everything(root, 0.25):
        assert len(dataset.classes) >= max(dataset.labels) + 1
    shutil.rmtree(root)
