"""Image folders (``train/CLASS/IMAGE``), read without surprises from links, loops and nested folders.

timm's folder reader (``ReaderImageFolder``) follows directory links with no loop check, so a link back to a parent
folder repeats every image once per level until the path gets too long (200 images became 8,200 samples), and it
names each image's class after its innermost folder, so ``test/b/extra/x.png`` is class ``extra``. :class:`FolderReader`
takes its place behind the same interface (``samples``, ``class_to_idx``, ``reader[i]`` -> (file, label)):

- the class of an image is the split's top-level folder it is in, however deep it lies below it (as torchvision's
  ``ImageFolder``); classes are numbered in timm's natural sort order, so flat folders keep the labels they had;
- directory links are followed (a class folder may be a link), but each real directory is read once: a link that
  reaches a directory already read (a loop, or one folder under two names) is a one-line :class:`DataError`;
- images directly in the split folder (no class) are refused, and so are image names that are not regular files
  (broken links, FIFOs); hidden entries (``.name``, e.g. macOS ``._x.png`` files) are skipped;
- each image's file identity ``(st_dev, st_ino)`` is kept, so that splits can be checked to share no file.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from stat import S_ISREG
from typing import IO

from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader import Reader
from timm.utils.misc import natural_key

from ..errors import DataError, one_line

__all__ = ["FolderReader", "Identity"]

Identity = tuple[int, int]
"""A file's ``(st_dev, st_ino)``: equal for two names of one file (hard or symbolic links)."""


class FolderReader(Reader):
    """The images of one split folder; ``samples`` holds ``(path, label)`` pairs sorted by path.

    Attributes:
        root: the split folder.
        samples: ``(path, label)`` per image, in timm's (natural) path order.
        class_to_idx: class folder name -> label, for the class folders that hold at least one image.
        identities: ``(st_dev, st_ino)`` per sample.
        sizes: the file size per sample, in bytes.
        empty_classes: class folders that hold no image.

    Raises:
        DataError: the folder cannot be read, holds no image, holds images outside class folders or non-regular
            image entries, or a directory link loops (or reaches a folder read already).
    """

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = str(Path(root))  # normalised: every sample path is this, a separator, and the rest
        self._extensions = get_img_extensions(as_set=True)
        self._seen: dict[Identity, Path] = {}
        self.skipped: Counter[str] = Counter()
        found: list[tuple[str, str, Identity, int]] = []
        classes, loose = self._top_level(Path(root))
        if loose:
            raise DataError(f"{root} holds {len(loose)} image(s) outside class folders (e.g. {loose[0]}); move each "
                            "image into the folder of its class (train/CLASS/IMAGE)")
        for name in classes:
            found.extend((path, name, identity, size) for path, identity, size in self._walk(Path(root) / name))
        counts = Counter(item[1] for item in found)
        self.empty_classes = [name for name in classes if not counts[name]]
        if not found:
            others = ", ".join(f"{count} {ext or 'no-extension'}" for ext, count in self.skipped.most_common(3))
            raise DataError(f"{root} holds no images ({', '.join(sorted(self._extensions))}) in class folders"
                            + (f"; it holds other files ({others}): convert them" if others else ""))
        found.sort(key=lambda item: natural_key(item[0]))
        self.class_to_idx = {name: i for i, name in enumerate(sorted(counts, key=natural_key))}
        self.samples = [(path, self.class_to_idx[name]) for path, name, _, _ in found]
        self.identities = [item[2] for item in found]
        self.sizes = [item[3] for item in found]

    def _scan(self, folder: Path) -> list[os.DirEntry]:
        """The visible entries of ``folder``, sorted by name; the folder's identity is recorded (each once)."""
        try:
            stat = folder.stat()
            identity = (stat.st_dev, stat.st_ino)
            if identity in self._seen:
                raise DataError(f"{folder} is a link to {self._seen[identity]}, a folder read already (a symlink loop, "
                                "or one folder under two names); remove the link")
            self._seen[identity] = folder
            with os.scandir(folder) as entries:
                return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot read the folder {folder}: {one_line(exc)}") from None

    def _is_image(self, entry: os.DirEntry) -> bool:
        ext = os.path.splitext(entry.name)[1].lower()
        if ext not in self._extensions:
            self.skipped[ext] += 1
            return False
        return True

    def _top_level(self, root: Path) -> tuple[list[str], list[str]]:
        """The class folder names and the images lying directly in the split folder."""
        classes, loose = [], []
        for entry in self._scan(root):
            if _is_dir(entry):
                classes.append(entry.name)
            elif self._is_image(entry):
                loose.append(entry.name)
        return classes, loose

    def _walk(self, top: Path) -> list[tuple[str, Identity, int]]:
        """Every image below ``top`` (links followed, each real directory once): path, file identity, size."""
        images, stack = [], [top]
        while stack:
            for entry in self._scan(stack.pop()):
                if _is_dir(entry):
                    stack.append(Path(entry.path))
                elif self._is_image(entry):
                    images.append((entry.path, *_stat(entry)))
        return images

    def __getitem__(self, index: int) -> tuple[IO[bytes], int]:
        path, target = self.samples[index]
        return open(path, "rb"), target

    def __len__(self) -> int:
        return len(self.samples)

    def _filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        filename = self.samples[index][0]
        if basename:
            return os.path.basename(filename)
        return filename if absolute else os.path.relpath(filename, self.root)


def _stat(entry: os.DirEntry) -> tuple[Identity, int]:
    """``((st_dev, st_ino), size)`` of the file ``entry`` names (of a link's target); refuses non-regular files."""
    try:
        stat = entry.stat()
    except FileNotFoundError:
        raise DataError(f"{entry.path} is a broken link; remove it or restore its target") from None
    except OSError as exc:
        raise DataError(f"cannot read {entry.path}: {one_line(exc)}") from None
    if not S_ISREG(stat.st_mode):
        raise DataError(f"{entry.path} is not a regular file (a FIFO, device or socket); remove it")
    return (stat.st_dev, stat.st_ino), stat.st_size


def _is_dir(entry: os.DirEntry) -> bool:
    """A directory, or a link to one (a broken link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False
