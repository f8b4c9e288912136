"""Writing files safely: through a unique temporary file in the target's folder, then an atomic rename.

The temporary name is random and created exclusively (``mkstemp``: ``O_CREAT | O_EXCL``), so a link planted under a
predictable name is never followed; a crash leaves the old file or the new one, never half of one; the rename replaces
a link at the target itself, not the file the link points to.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "write_text", "ensure_writable", "LOCK_FILE", "exclusive", "quiet_fd"]

LOCK_FILE = ".pfconvert.lock"


def atomic_write(path: str | Path, write: Callable[[Path], object], *, fsync: bool = True) -> Path:
    """Call ``write(temp_path)`` on a fresh private temporary file next to ``path``, give it the usual permissions,
    fsync it, then rename it onto ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        write(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp creates 0600; the file gets what a plain open() would give it
        if fsync:
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def ensure_writable(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an existing output that is a file or a non-empty folder unless ``overwrite`` (nothing the user had is
    overwritten silently).

    Raises:
        ArtifactError: the output exists and ``overwrite`` is not set.
    """
    from .errors import ArtifactError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ArtifactError(f"output {out} already exists and is not empty; choose another --out or pass --overwrite")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def exclusive(folder: str | Path, holder: str) -> Iterator[None]:
    """Hold ``folder``'s lock (``.pfconvert.lock``, an advisory ``flock``) for the block; the operating system drops
    it when the process ends, however it ends.

    Raises:
        ArtifactError: another process holds the lock (the message names its PID and what it is doing).
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    from .errors import ArtifactError

    path = Path(folder) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ArtifactError(f"{folder} is in use by PID {other}; wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} ({holder})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def quiet_fd(fd: int) -> Iterator[None]:
    """Send what native code writes to file descriptor ``fd`` (1: stdout, 2: stderr) to /dev/null for the block:
    TorchScript dumps graphs and the profiler logs lines there, past Python's own streams."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
    try:
        if stream is not None:
            stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError):  # no such descriptor (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
