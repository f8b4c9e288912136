"""Writing files safely: through a unique temporary file in the target's folder, then an atomic rename.

The temporary name is random and created exclusively (``mkstemp``: ``O_CREAT | O_EXCL``), so a link planted under a
predictable name is never followed; a crash leaves the old file or the new one, never half of one; the rename replaces
a link at the target itself, not the file the link points to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "write_text", "ensure_writable", "check_output_file", "os_reason", "short", "LOCK_FILE", "TRANSIENT_PREFIX",
           "exclusive", "quiet_fd"]

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


def os_reason(exc: OSError, what: str = "--out") -> str:
    """Why an operating-system call failed, and what to do about it, in a few words (no errno noise)."""
    reason = (exc.strerror or type(exc).__name__).rstrip(".")
    hint = {errno.ENOSPC: "free some space or choose another " + what,
            errno.EDQUOT: "free some space or choose another " + what,
            errno.EACCES: f"it is not writable by you: choose another {what}",
            errno.EPERM: f"it is not writable by you: choose another {what}",
            errno.EROFS: f"the file system is read-only: choose another {what}",
            errno.ENAMETOOLONG: f"choose a shorter {what}",
            errno.ELOOP: "a link points in a loop or where pfconvert does not follow links: remove it",
            errno.EISDIR: "a folder stands where a file is expected: remove or rename it",
            errno.ENOTDIR: f"a file stands where a folder is expected: choose another {what}",
            errno.EEXIST: f"choose another {what}"}.get(exc.errno or 0, "")
    return reason.lower() if not hint else f"{reason.lower()}; {hint}"


def short(path: str | Path, limit: int = 100) -> str:
    """``path`` as text, elided in the middle when longer than ``limit`` characters (a 4,000-character name would
    fill the user's terminal)."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 2):]}"


TRANSIENT_PREFIX = ".pfconvert-"
"""Temporary folders pfconvert builds an artifact in (``.pfconvert-XXXX.tmp``): removed when a write ends, left only
by a hard kill; they, and the lock file, do not make a folder anyone's."""


def _transient(entry: Path) -> bool:
    return entry.name == LOCK_FILE or (entry.name.startswith(TRANSIENT_PREFIX) and entry.name.endswith(".tmp"))


def ensure_writable(out: str | Path, overwrite: bool = False, marker: str | None = None) -> None:
    """Refuse an existing output that is a file or a non-empty folder unless ``overwrite`` (nothing the user had is
    overwritten silently).

    With ``marker`` (``recipe.json``: ``out`` is an artifact folder), an existing *file* is refused even with
    ``overwrite``, and so is a non-empty folder that does not hold ``marker``: ``overwrite`` replaces what pfconvert
    wrote into its own folder, never a folder of the user's.

    Raises:
        OutputExistsError: the output exists and may not be replaced (an :class:`~pfconvert.errors.ArtifactError`).
        ArtifactError: the output cannot even be looked at (too long a name, no permission...), or is a link to
            nothing.
    """
    from .errors import ArtifactError, OutputExistsError

    out = Path(out)
    try:
        if out.is_symlink() and not out.exists():
            raise ArtifactError(f"output {short(out)} is a link to nothing; remove it or choose another --out")
        if out.exists() and not out.is_dir():
            if marker is not None:
                raise OutputExistsError(f"output {short(out)} is a file, not a folder (an artifact is a folder); "
                                        "choose another --out (the file is kept)")
            if not overwrite:
                raise OutputExistsError(f"output {short(out)} already exists and is not empty; choose another --out "
                                        "or pass --overwrite")
            return
        entries = [entry for entry in out.iterdir() if not _transient(entry)] if out.is_dir() else []
    except OSError as exc:
        raise ArtifactError(f"cannot use output {short(out)}: {os_reason(exc)}") from None
    if not entries:
        return
    if not overwrite:
        raise OutputExistsError(f"output {short(out)} already exists and is not empty; choose another --out or "
                                "pass --overwrite")
    if marker is not None and not (out / marker).is_file():
        raise OutputExistsError(f"output {short(out)} is not a pfconvert artifact (it has no {marker}) and is not "
                                "empty; --overwrite only replaces an artifact's own files: choose a new or empty "
                                "folder")


def check_output_file(path: str | Path, overwrite: bool = False, *, option: str = "--out",
                      example: str = "out", suffix: str | None = None, exists: type[Exception] | None = None,
                      error: type[Exception] | None = None) -> Path:
    """The one check of an output *file* (a rule file, a plot, an exported model), before any work starts: refuse a
    folder, a wrong ``suffix``, an existing file without ``overwrite``, something that is not a regular file, a name
    under a file, and a folder that cannot be written in. Missing parent folders are fine (they are created). Output
    *folders* (artifacts) are checked by :func:`ensure_writable`.

    Args:
        option: the option that named ``path`` (every message starts with it).
        example: a file name to suggest where a folder was given (``rule.yaml``).
        suffix: the suffix the file must have (``.png``), or None.
        exists: the error class for an existing file (default :class:`~pfconvert.errors.OutputExistsError`).
        error: the error class of the other refusals (default :class:`~pfconvert.errors.PfconvertError`).
    """
    from .errors import OutputExistsError, PfconvertError

    exists, error = exists or OutputExistsError, error or PfconvertError
    path = Path(path)
    if path.is_dir():
        raise error(f"{option} {short(path)} is a directory; give a file name such as {short(path / example)}")
    if suffix is not None and path.suffix.lower() != suffix:
        raise error(f"{option} {short(path)} is not a {suffix} file name; use e.g. {short(path.with_suffix(suffix))}")
    if path.exists() and not overwrite:
        raise exists(f"{option} {short(path)} already exists; choose another path or pass --overwrite")
    if path.exists() and not path.is_file():
        raise error(f"{option} {short(path)} is not a regular file; choose another path")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the nearest existing folder: the missing ones are created in it
    if not parent.is_dir():
        raise error(f"{option} {short(path)} lies under {short(parent)}, which is a file, not a directory; choose "
                    "another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{option} {short(path)}: cannot write in {short(parent)} (permission denied); choose another path")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def exclusive(folder: str | Path, holder: str) -> Iterator[None]:
    """Hold ``folder``'s lock (``.pfconvert.lock``, an advisory ``flock``) for the block; the operating system drops
    it when the process ends, however it ends.

    Raises:
        ArtifactError: another process holds the lock (the message names its PID and what it is doing), or the lock
            cannot be taken: the folder is read-only, or something not pfconvert's stands at the lock's name (a link,
            a folder, a hard link to another file); one line each.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    from .errors import ArtifactError

    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or path.is_symlink():
            raise ArtifactError(f"{short(path)} is not pfconvert's lock file (a link, a folder or a device stands "
                                "there); remove it and run again") from None
        raise ArtifactError(f"cannot lock {short(folder)} ({LOCK_FILE}): {os_reason(exc, 'folder')}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # a hard link: writing the PID would change another file
        os.close(fd)
        raise ArtifactError(f"{short(path)} is not pfconvert's lock file (not a regular file of its own); remove it "
                            "and run again")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ArtifactError(f"{folder} is in use by PID {other}; wait for it to finish or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} ({holder})\n".encode(), 0)
        except OSError as exc:
            raise ArtifactError(f"cannot lock {short(folder)} ({LOCK_FILE}): {os_reason(exc, 'folder')}") from None
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
