"""Image datasets and their three splits: ``train``, ``val`` (model selection) and ``test`` (the figures).

Sources (:func:`resolve_source`):

- ``fashion-mnist`` or a folder of IDX files (MNIST layout): read by :mod:`.idx`; ``test`` is the ``t10k`` files.
- anything timm's dataset factory reads (``timm.data.create_dataset``): an image folder with ``train/`` (and
  ``val/``, ``test/``) class folders or ``train.tar`` (``val.tar``, ``test.tar``) archives of them, one ``.tar``
  (a training split only), and ``hfds/NAME`` (Hugging Face datasets, where the ``datasets`` package is installed).

Splits are honest: ``val``, on which fine-tuning chooses its best epoch, is carved from the training images (a seeded
``val_fraction`` of them, :func:`open_split`) unless the source has both a ``val/`` and a ``test/`` folder; ``test``
is never seen before the figures are reported: the ``t10k`` files, the ``test/`` folder, or, where there is none, the
``val/`` folder (with selection then on a split carved from ``train/``).

Splits agree: a split read from a place of its own (``test``; ``val`` with ``val/`` and ``test/`` folders) must have
exactly the class names of the training split (or of the ``classes`` given, e.g. those an artifact was fine-tuned
on), and no image file (by ``(st_dev, st_ino)``, so links count) may be in two splits, a carved ``val`` included.
Image folders are read by :class:`~pfconvert.data.folders.FolderReader` (class = top-level folder, link loops
refused) and tars are checked by :func:`~pfconvert.data.tars.check_tar` before timm's tar reader reads them.

Each split yields ``(PIL image -> transform, label)``, converted to the mode the model needs (``"RGB"`` for
3-channel models, ``"L"`` for 1-channel ones; 16-bit images are scaled to 8 bits). Opening a split fails with a
one-line :class:`~pfconvert.errors.DataError` on a missing, empty or corrupt dataset, and an image that fails to decode
or read later raises the same error naming it (also from a loader's worker process). Images above PIL's pixel limit
are refused from their header, before decoding. :meth:`ImageSamples.fingerprint` identifies a split's data cheaply
(file names, sizes and labels; for IDX, the pixels), so that a resumed fine-tune can check it trains on the same.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data.readers.reader_image_in_tar import ReaderImageInTar
from torch.utils.data import Dataset

from ..errors import DataError, one_line
from .checks import Fingerprint, check_disjoint, check_limit, match_classes, to_mode
from .folders import FolderReader
from .idx import IDX_SPLITS, find_idx_file, read_idx
from .tars import COMPRESSED_SUFFIXES, check_tar

__all__ = ["SPLITS", "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "DataSource", "ImageSamples", "IdxDataset",
           "TimmSamples", "open_image", "resolve_source", "open_split"]

SPLITS = ("train", "val", "test")
FASHION_MNIST_DIR = Path(os.environ.get("PFCONVERT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_MAX_CHECKED = 50_000  # files opened up front; larger sets are sampled (runtime decode errors still name the file)
_MAX_CLASSES = 1_000_000  # an IDX label above this is a damaged file, not a class


@dataclass(frozen=True)
class DataSource:
    """Where a dataset lives and how it is read: ``kind`` is ``idx`` or ``timm``; ``timm_name`` the factory's name
    (``""`` for a folder or tar, ``hfds/NAME``)."""

    root: Path | None
    kind: str
    name: str
    timm_name: str = ""

    def folder(self, split: str) -> Path | None:
        """``root/split`` (a folder) or ``root/split.tar`` when the source is a folder that has it."""
        if self.kind != "timm" or self.timm_name or self.root is None or not self.root.is_dir():
            return None
        for path in (self.root / split, self.root / f"{split}.tar"):
            if path.is_dir() or (path.is_file() and path.suffix == ".tar"):
                return path
        return None


@contextmanager
def open_image(path: str | Path | IO[bytes]) -> Iterator[Image.Image]:
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


def _decode(name: object, source: str | Path | IO[bytes], mode: str) -> Image.Image:
    try:
        with open_image(source) as image:
            return to_mode(image, mode, name)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {name} is too large to decode safely ({one_line(exc)}); resize or remove it") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {name}: {one_line(exc)}; remove or replace the file") from None


class ImageSamples(Dataset):
    """Base dataset: subclasses implement :meth:`load` and :meth:`subset`; this class applies mode conversion and
    the transform. ``description`` says which split this is and where it comes from."""

    def __init__(self, labels: list[int], classes: tuple[str, ...], mode: str = "RGB", description: str = "") -> None:
        self.labels = labels
        self.classes = classes
        self.mode = mode
        self.description = description
        self.transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        """Return the image at ``index``, converted to :attr:`mode`."""
        raise NotImplementedError

    def subset(self, keep: list[int]) -> ImageSamples:
        """A dataset of the same kind holding only the samples at ``keep``."""
        raise NotImplementedError

    def image_size(self) -> tuple[int, int] | None:
        """(width, height) of the first image (the data config resizes small images whole)."""
        return self.load(0).size if len(self) else None

    def fingerprint(self) -> str:
        """A hash of this split's data, cheap to compute: subclasses hash their files' names and sizes (or pixels)
        with the labels; this base version, only the class names and labels."""
        return Fingerprint(type(self).__name__).add(self.classes, self.labels).hexdigest()

    def files(self) -> tuple[list[tuple[int, int]], list[Path]]:
        """``(st_dev, st_ino)`` and path of each sample's file, for datasets read from files one by one (else
        empty lists)."""
        return [], []

    def empty_classes(self) -> list[str]:
        """Class folders of the split that hold no image (they are not classes of it)."""
        return []

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Image.Image, int]:
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class IdxDataset(ImageSamples):
    """Images held in memory as a uint8 array ``[N, H, W]`` (read from IDX files)."""

    def __init__(self, images: np.ndarray, labels: list[int], classes: tuple[str, ...], mode: str = "RGB",
                 description: str = "") -> None:
        super().__init__(labels, classes, mode, description)
        self.images = images

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert(self.mode)

    def subset(self, keep: list[int]) -> IdxDataset:
        return IdxDataset(self.images[keep], [self.labels[i] for i in keep], self.classes, self.mode, self.description)

    def fingerprint(self) -> str:
        """The pixels (hashed at about 1 GB/s), labels and class names."""
        pixels = np.ascontiguousarray(self.images)
        return Fingerprint("idx").add(pixels.shape, pixels.data.tobytes(), self.labels, self.classes).hexdigest()


class TimmSamples(ImageSamples):
    """A dataset from timm's factory (folder, tar, Hugging Face datasets), read sample by sample through its reader."""

    def __init__(self, dataset: Any, indices: list[int], labels: list[int], classes: tuple[str, ...],
                 mode: str = "RGB", description: str = "") -> None:
        super().__init__(labels, classes, mode, description)
        self.dataset, self.indices = dataset, indices

    def _name(self, position: int) -> str:
        """The file (or ``TAR:member``) of sample ``position`` of the reader."""
        reader = self.dataset.reader
        if not hasattr(reader, "_filename"):
            return f"#{position}"
        name = reader._filename(position, absolute=True)
        return f"{reader.root}:{name}" if isinstance(reader, ReaderImageInTar) else str(name)

    def load(self, index: int) -> Image.Image:
        reader, position = self.dataset.reader, self.indices[index]
        try:
            sample, _ = reader[position]
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise DataError(f"cannot read image {self._name(position)}: {one_line(exc)}; check the file") from None
        if isinstance(sample, Image.Image):
            return to_mode(sample, self.mode, self._name(position))
        try:
            return _decode(self._name(position), sample, self.mode)
        finally:
            if hasattr(sample, "close"):
                sample.close()

    def subset(self, keep: list[int]) -> TimmSamples:
        return TimmSamples(self.dataset, [self.indices[i] for i in keep], [self.labels[i] for i in keep],
                           self.classes, self.mode, self.description)

    def paths(self) -> list[Path]:
        """The image files of a folder dataset (none for tar or Hugging Face datasets)."""
        samples = getattr(self.dataset.reader, "samples", None)
        if samples is None or len(samples) == 0 or not isinstance(samples[0][0], str):
            return []
        return [Path(samples[i][0]) for i in self.indices]

    def empty_classes(self) -> list[str]:
        return list(getattr(self.dataset.reader, "empty_classes", []))

    def files(self) -> tuple[list[tuple[int, int]], list[Path]]:
        reader = self.dataset.reader
        if not isinstance(reader, FolderReader):
            return [], []
        return [reader.identities[i] for i in self.indices], self.paths()

    def fingerprint(self) -> str:
        """Folder: each image's path below the split folder, size and label; tar: each member's name, size and
        label; Hugging Face: the dataset's own fingerprint with the indices and labels."""
        reader, mark = self.dataset.reader, Fingerprint("timm").add(self.classes, self.labels)
        if isinstance(reader, FolderReader):
            start = len(os.path.join(reader.root, ""))  # the samples' paths are the root joined with the rest
            for i in self.indices:
                mark.add(reader.samples[i][0][start:], reader.sizes[i])
        elif isinstance(reader, ReaderImageInTar):
            for i in self.indices:
                member = reader.samples[i][0]
                mark.add(member.name, member.size)
        else:
            mark.add(getattr(getattr(reader, "dataset", None), "_fingerprint", None), self.indices)
        return mark.hexdigest()


def resolve_source(data: str | Path) -> DataSource:
    """Turn ``--data`` into a :class:`DataSource` (see the module docstring).

    Raises:
        DataError: the path does not exist or holds no dataset, or the source needs a package that is missing.
    """
    text = str(data)
    if text.lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        if not FASHION_MNIST_DIR.is_dir():
            raise DataError(f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR}; install Debian's "
                            "dataset-fashion-mnist or pass --data DIR with its IDX files")
        return DataSource(FASHION_MNIST_DIR, "idx", "fashion-mnist")
    prefix = text.partition("/")[0].lower() if "/" in text and not Path(text).exists() else ""
    if prefix == "hfds":
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise DataError(f"{text}: Hugging Face datasets need the `datasets` package (pip install datasets)") from None
        return DataSource(None, "timm", text, timm_name=text)
    if prefix in ("wds", "hfids", "tfds"):
        raise DataError(f"{text}: streaming sources ({prefix}/) are not supported: a fine-tune resumes exactly from any "
                        "step, which needs random access; use an image folder, a .tar or hfds/")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file() and root.suffix == ".tar":
        return DataSource(root.resolve(), "timm", root.name)
    if root.is_file() and root.name.lower().endswith(COMPRESSED_SUFFIXES):
        raise DataError(f"{root} is a compressed tar; pfconvert reads uncompressed .tar files (timm's tar reader seeks "
                        "to each image): decompress it first (e.g. gunzip -k FILE, or tar -xf FILE into a folder)")
    if not root.is_dir():
        raise DataError(f"--data must be a folder (image folders or IDX files), a .tar or hfds/NAME, got file {root}")
    if find_idx_file(root, IDX_SPLITS["train"][0]) is not None:
        return DataSource(root.resolve(), "idx", root.name)
    if (root / "train").is_dir() or (root / "train.tar").is_file():
        return DataSource(root.resolve(), "timm", root.name)
    raise DataError(f"{root} is not a dataset: expected train/ (and val/, test/) class folders, or "
                    "train-images-idx3-ubyte[.gz] with its labels (IDX)")


def open_split(source: DataSource, split: str, limit: int | None = None, seed: int = 0,
               classes: tuple[str, ...] | None = None, val_fraction: float = 0.1,
               classes_of: str | None = None) -> ImageSamples:
    """Open one split, optionally a seeded random subset of ``limit`` samples.

    Args:
        source: from :func:`resolve_source`.
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module docstring for where each comes from).
        limit: keep at most this many samples (a fixed random subset, so every class is represented); at least 1.
        seed: seed of the validation carve and of the subset choice.
        classes: the class names the split must have, in label order (default: a split read from a place of its
            own must have the training split's); the labels are numbered by them.
        val_fraction: the share of the training images carved out as ``val`` (0: ``val`` must be a folder).
        classes_of: what ``classes`` are, for error messages (default: ``the train split``).

    Raises:
        DataError: the split is missing, empty, unreadable, its classes differ, it shares a file with another split,
            or ``limit`` is not a positive integer.
    """
    limit = check_limit(limit)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"the validation share of the training images must be in [0, 1), got {val_fraction}")
    dataset = _open(source, split, (classes, classes_of or "the train split"), val_fraction, seed)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {source.name} is empty")
    if limit is not None and limit < len(dataset):
        keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        dataset = dataset.subset(keep.tolist())
        dataset.description += f", a seeded subset of {limit}"
    if isinstance(dataset, TimmSamples):
        _check_images(dataset.paths(), seed)
    return dataset


_Reference = tuple["tuple[str, ...] | None", str]  # (class names a split must have, what they are)


def _open(source: DataSource, split: str, reference: _Reference, val_fraction: float, seed: int) -> ImageSamples:
    folders = source.folder("test") is not None and source.folder("val") is not None
    if split == "test" or (split == "val" and folders):  # a split of its own
        return _open_separate(source, split, reference)
    if folders:  # val/ and test/ folders: nothing is carved
        return _read(source, split, reference, "train: the train/ folder")
    if val_fraction == 0:
        if split == "val":
            raise DataError(f"{source.name} has no validation split: carve one from the training images "
                            "(--val-split FRACTION, e.g. 0.1) or add val/ and test/ folders")
        return _read(source, "train", reference, "train")
    base = _read(source, "train", reference, "train")
    order = torch.randperm(len(base), generator=torch.Generator().manual_seed(10_007 + seed)).tolist()
    cut = max(1, round(val_fraction * len(base)))
    val, train = sorted(order[:cut]), sorted(order[cut:])
    identities, paths = base.files()
    if identities:  # one file linked twice into train/ could land in both parts
        check_disjoint("val", [identities[i] for i in val], [paths[i] for i in val], "train",
                       [identities[i] for i in train], [paths[i] for i in train])
    carved = base.subset(val if split == "val" else train)
    share = f"{val_fraction:.0%} of the training images (seed {seed})"
    carved.description = f"val: {share}" if split == "val" else f"train: the other {1 - val_fraction:.0%}"
    return carved


def _open_separate(source: DataSource, split: str, reference: _Reference) -> ImageSamples:
    """``test``, or ``val`` from its folder: the training split's classes (unless given), no file of train (and,
    for ``test``, of the ``val/`` folder)."""
    train_classes, train = _train_view(source)
    if reference[0] is None:
        reference = (train_classes, "the train split")
    description = "val: the val/ folder" if split == "val" else "test"
    dataset = _read(source, split, reference, description)
    if train is not None:
        _check_disjoint(dataset, split, train, "train")
    val_folder = source.folder("val")
    if split == "test" and source.folder("test") is not None and val_folder is not None and val_folder.is_dir():
        _check_disjoint(dataset, split, _open_timm(source, "val", (None, ""), "val"), "val")
    return dataset


def _train_view(source: DataSource) -> tuple[tuple[str, ...] | None, ImageSamples | None]:
    """The training split's class names and, for an image folder, the split itself (for the file check); IDX
    sources compare with the training labels themselves, and Hugging Face ones are not read twice."""
    train = source.folder("train")
    if train is None:
        return None, None
    if train.is_dir():
        dataset = _open_timm(source, "train", (None, ""), "train")
        return dataset.classes, dataset
    return check_tar(train).classes, None


def _check_disjoint(mine: ImageSamples, split: str, theirs: ImageSamples, other: str) -> None:
    identities, paths = mine.files()
    if identities:
        check_disjoint(split, identities, paths, other, *theirs.files())


def _read(source: DataSource, split: str, reference: _Reference, description: str) -> ImageSamples:
    if source.kind == "idx":
        return _open_idx(source, split, reference, description)
    return _open_timm(source, split, reference, description)


def _open_idx(source: DataSource, split: str, reference: _Reference, description: str) -> IdxDataset:
    """Read the image and label IDX files of ``split`` (``test``: the t10k files) and check that they agree; the
    classes are the training labels' (the test labels may not use more)."""
    assert source.root is not None
    image_stem, label_stem = IDX_SPLITS["test" if split == "test" else "train"]
    image_path, label_path = find_idx_file(source.root, image_stem), find_idx_file(source.root, label_stem)
    if image_path is None or label_path is None:
        missing = image_stem if image_path is None else label_stem
        raise DataError(f"{source.root} has no {missing}[.gz] for the {split} split")
    images, labels = read_idx(image_path, expect_ndim=3), _read_labels(label_path)
    if images.dtype != np.uint8:
        raise DataError(f"{image_path} holds {images.dtype} pixels; only uint8 images are supported")
    if 0 in images.shape[1:]:
        raise DataError(f"{image_path} holds images of {images.shape[2]}x{images.shape[1]} pixels; check the file")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    top = int(labels.max()) if len(labels) else -1
    if split == "test":
        train_path = find_idx_file(source.root, IDX_SPLITS["train"][1])
        train_labels = _read_labels(train_path) if train_path is not None else labels
        train_top = int(train_labels.max()) if len(train_labels) else -1
        if top > train_top:
            raise DataError(f"the test split ({label_path.name}) has label {top}, which the training labels "
                            f"({train_path.name if train_path else ''}) never use (labels 0..{train_top}); check the "
                            "files belong together")
        top = train_top
    num_classes = max(top + 1, 10 if source.name == "fashion-mnist" else 0)
    names = FASHION_MNIST_CLASSES if num_classes == 10 else tuple(str(i) for i in range(num_classes))
    if reference[0] is not None:
        match_classes(names, reference[0], split, label_path, reference[1])
    what = f"{description} ({image_path.name})" if split == "test" else description
    return IdxDataset(images, labels.astype(np.int64).tolist(), names, description=what)


def _read_labels(path: Path) -> np.ndarray:
    """An IDX label file: integers in [0, _MAX_CLASSES)."""
    labels = read_idx(path, expect_ndim=1)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path} holds {labels.dtype} labels; class labels must be integers")
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"{path} has negative labels")
    if len(labels) and int(labels.max()) >= _MAX_CLASSES:
        raise DataError(f"{path} has label {int(labels.max())}, not a class index; check the file")
    return labels


def _open_timm(source: DataSource, split: str, reference: _Reference, description: str) -> TimmSamples:
    """A split through timm's dataset (a :class:`FolderReader` for folders, timm's readers for tars and Hugging
    Face datasets); ``test`` falls back to the ``val/`` folder."""
    from timm.data import ImageDataset, create_dataset

    root, target, shown = source.root, source.root, split
    if not source.timm_name and root is not None:
        if root.is_file():  # one .tar: one split
            if split == "test":
                raise DataError(f"{root} is one split (train); for a test split give a folder holding train/ and "
                                "test/ (or val/) folders or .tar files")
        else:
            target = source.folder(split) if split != "test" else source.folder("test") or source.folder("val")
            if target is None:
                wanted = "a test/ or val/ folder (or .tar) to report on" if split == "test" else f"a {split}/ folder"
                raise DataError(f"{root} has no {wanted}; the training images are not a test split")
            if split == "test" and target.stem == "val":
                description = "test: the val/ folder (no test/ folder; selection uses a split carved from train/)"
            split = target.stem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if target is not None and target.is_dir() and not source.timm_name:
                dataset = ImageDataset(str(target), reader=FolderReader(target), input_img_mode=None)
            else:
                if target is not None and target.is_file():
                    check_tar(target)
                dataset = create_dataset(source.timm_name, root=str(target) if target is not None else None,
                                         split=split, input_img_mode=None)
    except (AssertionError, FileNotFoundError, RuntimeError, ValueError, KeyError, OSError, tarfile.TarError,
            EOFError) as exc:
        raise DataError(f"cannot read the {split} split of {source.name}: {one_line(exc)}") from None
    reader = dataset.reader
    samples = getattr(reader, "samples", None)
    if getattr(reader, "targets", None) is not None:  # the tar reader
        labels = [int(v) for v in reader.targets]
    elif samples is not None:
        labels = [int(target) for _, target in samples]
    elif hasattr(reader, "dataset") and getattr(reader, "label_key", None):
        labels = [int(v) for v in reader.dataset[reader.label_key]]
    else:
        raise DataError(f"{source.name}: the {split} split has no labels pfconvert can read")
    mapping = getattr(reader, "class_to_idx", None) or getattr(reader, "class_name_to_idx", None) or {}
    names = tuple(name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])) if mapping else tuple(
        str(i) for i in range(max(labels) + 1 if labels else 0))
    classes = reference[0]
    if classes is not None and mapping:  # this split's class names, numbered as the reference numbers them
        match_classes(names, classes, shown, target if target is not None else source.name, reference[1],
                      getattr(reader, "empty_classes", ()))
        index = {name: i for i, name in enumerate(classes)}
        labels = [index[names[label]] for label in labels]
    return TimmSamples(dataset, list(range(len(labels))), labels, classes or names, description=description)


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
