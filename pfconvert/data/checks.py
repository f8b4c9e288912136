"""Checks across splits and of what a caller asks for: the same classes in every split, no file in two splits, a
positive image limit, pixels pfconvert can turn into 8-bit images, and a cheap fingerprint of a split's data.

Each check fails with a one-line :class:`~pfconvert.errors.DataError` that names the split and what differs.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = ["check_limit", "match_classes", "check_disjoint", "to_mode", "Fingerprint"]


def check_limit(limit: Any, name: str = "limit") -> int | None:
    """``limit`` as an int (None: no limit); refuses 0, negatives and non-integers."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise DataError(f"{name} must be a positive number of images (or None for all), got {limit!r}")
    return int(limit)


def _listed(names: Sequence[str], empty: Iterable[str] = ()) -> str:
    """``'a', 'b' (an empty folder) and 3 more``."""
    hollow = set(empty)
    shown = [repr(name) + (" (an empty folder)" if name in hollow else "") for name in names[:5]]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def match_classes(names: Sequence[str], reference: Sequence[str], split: str, where: object, of: str,
                  empty: Iterable[str] = ()) -> None:
    """Refuse a split whose class names are not exactly ``reference`` (the names the model's labels stand for).

    Args:
        names: the split's class names; ``reference``: the ones it must have; ``of``: what ``reference`` is (``the
            train split``, ``the classes the model was fine-tuned on``); ``where``: the split's folder or file;
            ``empty``: class folders of the split that hold no image (named as such).
    """
    missing = [name for name in reference if name not in names]
    extra = [name for name in names if name not in reference]
    if not missing and not extra:
        return
    parts = ([f"lacks {_listed(missing, empty)}"] if missing else []) + (
        [f"has {_listed(extra)} that {of} lacks"] if extra else [])
    raise DataError(f"the {split} split ({where}) does not have the classes of {of}: it {' and '.join(parts)}; every "
                    f"split needs the same class folders, or labels would mean other classes")


def check_disjoint(split: str, mine: Sequence[tuple[int, int]], my_paths: Sequence[object], other: str,
                   theirs: Sequence[tuple[int, int]], their_paths: Sequence[object]) -> None:
    """Refuse two splits that share a file (the same ``(st_dev, st_ino)``: a link, a hard link, a loop)."""
    index = dict(zip(theirs, their_paths))
    shared = [(path, index[identity]) for identity, path in zip(mine, my_paths) if identity in index]
    if shared:
        path, twin = shared[0]
        raise DataError(f"{len(shared)} file(s) of the {split} split are also in the {other} split (by link or hard "
                        f"link), e.g. {path} is {twin}; an image must be in one split only: remove the duplicates")


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_mode(image: Image.Image, mode: str, name: object) -> Image.Image:
    """``image.convert(mode)``, with 16-bit images scaled to 8 bits (value / 257) first: PIL's own conversion clips
    them at 255, which turns a 16-bit photo into a black-and-white one. Refuses 32-bit integer and float pixels.

    Raises:
        DataError: pixels outside 0..65535 (32-bit integers) or floating-point pixels.
    """
    if image.mode in _SIXTEEN_BIT:
        pixels = np.asarray(image)
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low < 0 or high > 65535:
            raise DataError(f"image {name} holds 32-bit integer pixels ({low}..{high}); pfconvert reads 8- and 16-bit "
                            "images: convert it to 8 or 16 bits")
        image = Image.fromarray(((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8), "L")
    elif image.mode == "F":
        raise DataError(f"image {name} holds floating-point pixels; pfconvert reads 8- and 16-bit images: convert it "
                        "to 8 or 16 bits")
    return image.convert(mode)


class Fingerprint:
    """An incremental hash of a split's data (BLAKE2b, 16 bytes): what a resumed run checks it trains on."""

    def __init__(self, kind: str) -> None:
        self._hash = hashlib.blake2b(kind.encode(), digest_size=16)

    def add(self, *values: object) -> Fingerprint:
        """Add values (bytes as they are, anything else by its ``repr``), each delimited."""
        for value in values:
            data = value if isinstance(value, bytes) else repr(value).encode()
            self._hash.update(len(data).to_bytes(8, "little") + data)
        return self

    def hexdigest(self) -> str:
        """The fingerprint."""
        return self._hash.hexdigest()
