"""Shared fixtures. Fine-tuning fixtures (``ft_*``) build small real datasets and a tiny converted artifact."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FASHION_MNIST_SYSTEM = Path(os.environ.get("PFCONVERT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
"""Where ``--data fashion-mnist`` reads the full set (the library's ``FASHION_MNIST_DIR``: Debian's
dataset-fashion-mnist, or ``$PFCONVERT_FASHION_MNIST``; .ci/run points it at a missing folder to prove the fallback)."""
FASHION_MNIST_SAMPLE = Path(__file__).resolve().parent / "data" / "fashion-mnist"
FASHION_MNIST = FASHION_MNIST_SYSTEM if FASHION_MNIST_SYSTEM.is_dir() else FASHION_MNIST_SAMPLE
"""Real Fashion-MNIST: the full set where Debian's dataset-fashion-mnist is installed, else the committed sample
(600 training and 200 test images; licence in tests/data/fashion-mnist/README.md). No test needs the full set: tests
pass this folder as ``--data`` instead of the ``fashion-mnist`` shortcut."""


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array as an IDX file (gzipped when ``compress``)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload, compresslevel=1) if compress else payload)
    return path


def _read_fashion(stem: str, count: int) -> np.ndarray:
    """The first ``count`` records of an installed Fashion-MNIST IDX file."""
    raw = gzip.decompress((FASHION_MNIST / f"{stem}.gz").read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return data[:count].copy()


@pytest.fixture(scope="session")
def ft_fmnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small IDX copy of real Fashion-MNIST (480 train / 160 val images, gzipped), fast to read (from the full set
    or the committed sample)."""
    root = tmp_path_factory.mktemp("fmnist")
    for split, (count, prefix) in {"train": (480, "train"), "val": (160, "t10k")}.items():
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", _read_fashion(f"{prefix}-images-idx3-ubyte", count))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", _read_fashion(f"{prefix}-labels-idx1-ubyte", count))
    return root


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable image: a bright bar whose orientation/place depends on the class, plus noise."""
    image = rng.integers(0, 60, (size, size), dtype=np.uint8)
    third = size // 3
    if label == 0:
        image[third:2 * third, :] = 230
    elif label == 1:
        image[:, third:2 * third] = 230
    else:
        np.fill_diagonal(image, 230)
    return image


@pytest.fixture(scope="session")
def ft_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder (3 classes; 32 train / 8 val images each) mixing RGB JPEGs and grey PNGs of two sizes."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 32), ("val", 8)):
        for label, name in enumerate(("bars", "columns", "diagonal")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                grey = _pattern(label, 24 if index % 2 else 40, rng)
                if index % 3 == 0:
                    Image.fromarray(grey).save(folder / f"{index}.png")
                else:
                    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"{index}.jpg")
    return root


@pytest.fixture(scope="session")
def ft_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted artifact of timm's tiny ``test_efficientnet`` (10 classes, depthwise convs -> max-pool)."""
    import pfconvert

    model, record = pfconvert.convert("test_efficientnet", "maxpool", num_classes=10)
    assert record.replacements, "the maxpool rule should replace the depthwise convs of test_efficientnet"
    return pfconvert.save(model, record, tmp_path_factory.mktemp("artifact") / "te-maxpool")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that load OpenVINO in this process last. Once OpenVINO's runtime has run in a process, a later
    child of that process (a subprocess the test waits on) has crashed the whole test run with SIGSEGV here
    (pfconvert's own loaders start their workers from a fork server then: pfconvert/data/loaders.py)."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/integration/test_openvino.py"))
