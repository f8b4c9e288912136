"""Reader for IDX files (the MNIST / Fashion-MNIST format), plain or gzipped, with one-line errors.

The IDX format is a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` uint32 sizes, then the data.
:func:`read_idx` checks the header, the dtype and that the payload has exactly the bytes the header promises, so a
truncated download or a wrong file is reported before training starts rather than as a crash in the middle of it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "find_idx_file", "IDX_SPLITS"]

# IDX type code -> numpy dtype (big-endian where it matters).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Split name -> (images stem, labels stem), as the MNIST family names its files.
IDX_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(root: Path, stem: str) -> Path | None:
    """Return ``root/stem`` or ``root/stem.gz`` (also the ``stem.idx3-ubyte``-style dotted names), or None."""
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = root / name
        if path.is_file():
            return path
    return None


def _read_bytes(path: Path) -> bytes:
    """Read the whole file, decompressing gzip when the file starts with the gzip magic."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; re-download or re-install the dataset") from exc


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file into a numpy array, checking its header against its size.

    Args:
        path: ``.gz`` or plain IDX file.
        expect_ndim: if given, the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        The array, in native byte order.

    Raises:
        DataError: the file is missing, truncated, too long, or not an IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}); check the path")
    dtype, ndim = _DTYPES[data[2]], data[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path} has {ndim} dimension(s), expected {expect_ndim}; images and labels swapped?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header; re-download it")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path} is corrupt: header says {shape} ({expected} bytes) but it holds {len(data) - header} bytes; "
            "re-download it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
