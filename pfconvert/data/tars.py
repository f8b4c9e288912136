"""Checks of an image ``.tar`` before timm's tar reader (``ReaderImageInTar``) reads it.

timm scans a tar in streaming mode and later seeks to each image, so it reads uncompressed tars only; Python's
``tarfile`` silently stops at a truncated member or a damaged header in the middle of an archive (the images after it
vanish without a word), and raises a bare ``tarfile.ReadError`` on a file that is not a tar. :func:`check_tar` reads
the member headers (seeking over the data, so it costs one header read per member) and says in one line what is wrong:
a compressed tar (decompress it: ``.tar.gz``, ``.tgz`` and gzip data in a ``.tar`` are refused, not guessed at), not a
tar, truncated, damaged, no images, or images outside class folders.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from timm.data.readers.img_extensions import get_img_extensions
from timm.utils.misc import natural_key

from ..errors import DataError, one_line

__all__ = ["COMPRESSED_SUFFIXES", "TarContents", "check_tar", "compression_of"]

COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
_MAGIC = ((b"\x1f\x8b", "gzip", "gunzip -k"), (b"BZh", "bzip2", "bunzip2 -k"), (b"\xfd7zXZ\x00", "xz", "unxz -k"),
          (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"))
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TarContents:
    """What :func:`check_tar` found: the image count and the class names (None for a tar of tars, whose classes
    come from the inner tars' names)."""

    images: int
    classes: tuple[str, ...] | None


def compression_of(head: bytes) -> tuple[str, str] | None:
    """(compression name, the command that undoes it) when ``head`` starts with a compressor's magic number."""
    for magic, name, command in _MAGIC:
        if head.startswith(magic):
            return name, command
    return None


def check_tar(path: Path) -> TarContents:
    """Check that ``path`` is a whole, uncompressed tar of class folders of images.

    Raises:
        DataError: compressed, not a tar, truncated, damaged after a member, no images, or images outside class
            folders (timm would give them a class named after the archive's root).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            compressed = compression_of(handle.read(8))
        if compressed is not None:
            name, command = compressed
            raise DataError(f"{path} is {name}-compressed; pfconvert reads uncompressed .tar files (timm's tar reader "
                            f"seeks to each image): decompress it first ({command} FILE) and pass the .tar")
        images, classes, nested, loose = 0, set(), False, ""
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.offset_data + member.size > size:
                    raise DataError(f"{path} is truncated: member {member.name} needs {member.size} bytes at offset "
                                    f"{member.offset_data}, the file ends at {size}; re-create or re-download it")
                if not member.isfile():
                    continue
                folder, name = os.path.split(member.name.strip("/"))
                ext = os.path.splitext(name)[1].lower()
                nested = nested or ext == ".tar"
                if ext in get_img_extensions(as_set=True):
                    images += 1
                    label = os.path.basename(os.path.normpath(folder)) if folder else ""
                    if label in ("", "."):
                        loose = loose or member.name
                    classes.add(label)
            end = tar.offset
        _check_end(path, end, size)
    except tarfile.TarError as exc:
        raise DataError(f"{path} is not a tar archive, or it is damaged or truncated ({one_line(exc)}); check the "
                        "file, or re-create it with tar -cf") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from None
    if nested:
        return TarContents(images, None)
    if loose:
        raise DataError(f"{path} holds images outside class folders (e.g. {loose}); put each image in the folder of "
                        "its class (CLASS/IMAGE) inside the tar")
    if not images:
        raise DataError(f"{path} holds no images ({', '.join(sorted(get_img_extensions(as_set=True)))})")
    return TarContents(images, tuple(sorted(classes, key=natural_key)))


def _check_end(path: Path, end: int, size: int) -> None:
    """After the last member only zero blocks (the end-of-archive marker and padding) may follow, and the marker
    must be there: a tar cut at a member boundary reads as a whole one with fewer members."""
    if size - end < tarfile.BLOCKSIZE:
        raise DataError(f"{path} is truncated (it ends at byte {size} with no end-of-archive marker; members after it "
                        "are missing); re-create or re-download it")
    with open(path, "rb") as handle:
        handle.seek(end)
        position = end
        while chunk := handle.read(_CHUNK):
            stripped = chunk.lstrip(b"\0")
            if stripped:
                offset = position + len(chunk) - len(stripped)
                raise DataError(f"{path} is damaged at byte {offset} (not a tar header; {size - offset} bytes cannot "
                                "be read); re-create or re-download it")
            position += len(chunk)
