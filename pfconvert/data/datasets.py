"""Image datasets read from disk: ImageFolder trees and IDX (Fashion-MNIST) files, checked before training.

Each dataset yields ``(PIL image -> transform, label)``. Images are converted to the mode the model needs (``"RGB"``
for 3-channel models, ``"L"`` for 1-channel ones), so grey Fashion-MNIST digits feed an RGB model unchanged.
Discovery (:func:`open_split`) fails with a one-line :class:`~pfconvert.errors.DataError` on a missing, empty or
corrupt dataset; an image that still fails to decode during training raises the same error naming the file, instead
of being skipped silently.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError, one_line
from .idx import IDX_SPLITS, find_idx_file, read_idx

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "IMG_EXTENSIONS",
    "DataSource",
    "ImageSamples",
    "FolderDataset",
    "IdxDataset",
    "resolve_source",
    "open_split",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MAX_CHECKED = 50_000  # files opened up front; larger sets are sampled (runtime decode errors still name the file)


@dataclass(frozen=True)
class DataSource:
    """Where a dataset lives and in which format (``"idx"`` or ``"folder"``)."""

    root: Path
    kind: str
    name: str


class ImageSamples(Dataset):
    """Base dataset: subclasses implement :meth:`load`; this class applies mode conversion and the transform."""

    def __init__(self, labels: list[int], classes: tuple[str, ...], mode: str = "RGB") -> None:
        self.labels = labels
        self.classes = classes
        self.mode = mode
        self.transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        """Return the image at ``index``, converted to :attr:`mode`."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Image.Image, int]:
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``PIL.Image.open`` with its pixel limit (``Image.MAX_IMAGE_PIXELS``) enforced: an image above it is refused
    from its header, before anything is decoded (PIL only warns between 1x and 2x the limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None
    with image:
        yield image


class FolderDataset(ImageSamples):
    """Images in ``root/<class>/**/<file>``, classes numbered in sorted order."""

    def __init__(self, files: list[Path], labels: list[int], classes: tuple[str, ...], mode: str = "RGB") -> None:
        super().__init__(labels, classes, mode)
        self.files = files

    def load(self, index: int) -> Image.Image:
        path = self.files[index]
        try:
            with open_image(path) as image:
                return image.convert(self.mode)
        except Image.DecompressionBombError as exc:
            raise DataError(f"image {path} is too large to decode safely ({one_line(exc)}); resize or remove it") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise DataError(f"cannot decode image {path}: {one_line(exc)}; remove or replace the file") from None


class IdxDataset(ImageSamples):
    """Images held in memory as a uint8 array ``[N, H, W]`` (read from IDX files)."""

    def __init__(self, images: np.ndarray, labels: list[int], classes: tuple[str, ...], mode: str = "RGB") -> None:
        super().__init__(labels, classes, mode)
        self.images = images

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert(self.mode)


def resolve_source(data: str | Path) -> DataSource:
    """Turn ``--data`` into a :class:`DataSource`: ``"fashion-mnist"``, an IDX directory, or an ImageFolder tree.

    Raises:
        DataError: the path does not exist or holds neither format.
    """
    if str(data).lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        if not FASHION_MNIST_DIR.is_dir():
            raise DataError(
                f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR}; "
                "install Debian's dataset-fashion-mnist or pass --data DIR with its IDX files"
            )
        return DataSource(FASHION_MNIST_DIR, "idx", "fashion-mnist")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if not root.is_dir():
        raise DataError(f"--data must be a directory (ImageFolder or IDX files), got file {root}")
    if find_idx_file(root, IDX_SPLITS["train"][0]) is not None:
        return DataSource(root.resolve(), "idx", root.name)
    if (root / "train").is_dir():
        return DataSource(root.resolve(), "folder", root.name)
    raise DataError(
        f"{root} is not a dataset: expected train/ and val/ class folders (ImageFolder) "
        "or train-images-idx3-ubyte[.gz] with its labels (IDX)"
    )


def open_split(
    source: DataSource, split: str, limit: int | None = None, seed: int = 0, classes: tuple[str, ...] | None = None
) -> ImageSamples:
    """Open one split (``"train"`` or ``"val"``), optionally a seeded random subset of ``limit`` samples.

    Args:
        source: from :func:`resolve_source`.
        split: ``"train"`` or ``"val"``.
        limit: keep at most this many samples (a fixed random subset, so every class is represented).
        seed: seed of the subset choice.
        classes: class names of the training split; the validation split must use the same ones.

    Raises:
        DataError: the split is missing, empty, unreadable, or its classes differ from ``classes``.
    """
    if source.kind == "idx":
        dataset = _open_idx(source, split)
    else:
        dataset = _open_folder(source.root / split, classes)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {source.root} is empty")
    if limit is not None and limit < len(dataset):
        keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        dataset = _subset(dataset, keep.tolist())
    if isinstance(dataset, FolderDataset):
        _check_images(dataset.files, seed)
    return dataset


def _open_idx(source: DataSource, split: str) -> IdxDataset:
    """Read the image and label IDX files of ``split`` and check that they agree."""
    image_stem, label_stem = IDX_SPLITS[split]
    image_path, label_path = find_idx_file(source.root, image_stem), find_idx_file(source.root, label_stem)
    if image_path is None or label_path is None:
        missing = image_stem if image_path is None else label_stem
        raise DataError(f"{source.root} has no {missing}[.gz] for the {split} split")
    images, labels = read_idx(image_path, expect_ndim=3), read_idx(label_path, expect_ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{image_path} holds {images.dtype} pixels; only uint8 images are supported")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"{label_path} has negative labels")
    num_classes = max(int(labels.max()) + 1 if len(labels) else 0, 10 if source.name == "fashion-mnist" else 0)
    names = FASHION_MNIST_CLASSES if num_classes == 10 else tuple(str(i) for i in range(num_classes))
    return IdxDataset(images, labels.astype(np.int64).tolist(), names)


def _open_folder(root: Path, classes: tuple[str, ...] | None) -> FolderDataset:
    """Scan ``root/<class>/`` for images; ``classes`` (from the train split) fixes the label numbering."""
    if not root.is_dir():
        raise DataError(f"missing split folder {root}; an ImageFolder dataset needs train/ and val/")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no class folders; put images in {root}/<class name>/")
    names = classes if classes is not None else tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DataError(f"{root} has classes missing from the train split: {', '.join(unknown[:5])}")
    files, labels = [], []
    for label, name in enumerate(names):
        class_files = sorted(
            path for path in (root / name).rglob("*") if path.suffix.lower() in IMG_EXTENSIONS and path.is_file()
        ) if (root / name).is_dir() else []
        if not class_files and classes is None:
            raise DataError(f"class folder {root / name} has no images ({', '.join(IMG_EXTENSIONS[:4])}, ...)")
        files += class_files
        labels += [label] * len(class_files)
    return FolderDataset(files, labels, names)


def _subset(dataset: ImageSamples, keep: list[int]) -> ImageSamples:
    """Return a dataset of the same kind holding only the samples at ``keep``."""
    labels = [dataset.labels[i] for i in keep]
    if isinstance(dataset, IdxDataset):
        return IdxDataset(dataset.images[keep], labels, dataset.classes, dataset.mode)
    assert isinstance(dataset, FolderDataset)
    return FolderDataset([dataset.files[i] for i in keep], labels, dataset.classes, dataset.mode)


def _check_images(files: list[Path], seed: int) -> None:
    """Open every file (or a large seeded sample) and raise one DataError listing the unreadable ones."""
    checked = files
    if len(files) > _MAX_CHECKED:
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:_MAX_CHECKED]
        checked = [files[i] for i in pick.tolist()]
    bad = []
    for path in checked:
        try:
            with open_image(path) as image:
                image.verify()
        except Image.DecompressionBombError as exc:
            raise DataError(f"image {path} is too large to decode safely ({one_line(exc)}); resize or remove it") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            bad.append(path)
    if bad:
        shown = ", ".join(str(path) for path in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(f"{len(bad)} unreadable image(s): {shown}{more}; remove or replace them")
