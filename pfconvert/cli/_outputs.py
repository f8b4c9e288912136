"""Output files of a command checked before any work starts: a long search must not end in a traceback because
``--write-rule`` names a folder, and two options must not name the same file (the second would replace the first)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputExistsError, PfconvertError

__all__ = ["check_outputs", "check_output"]


def check_output(option: str, path: Path, overwrite: bool, example: str) -> None:
    """Refuse an output ``path`` that cannot be written: a folder, a name under a file, an unwritable folder, or an
    existing file without ``overwrite``. Missing parent folders are fine (they are created).

    Args:
        example: a file name to suggest in a folder given instead of a file (``rule.yaml``).

    Raises:
        OutputExistsError: the file exists and not ``overwrite``.
        PfconvertError: any other refusal (one line naming the option, the path and the fix).
    """
    if path.is_dir():
        raise PfconvertError(f"{option} {path} is a directory; give a file name such as {path / example}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{option} {path} already exists; choose another path or pass --overwrite")
    if path.exists() and not path.is_file():
        raise PfconvertError(f"{option} {path} is not a regular file; choose another path")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the nearest existing folder: the missing ones are created in it
    if not parent.is_dir():
        raise PfconvertError(f"{option} {path} lies under {parent}, which is a file, not a directory; choose another "
                             "path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PfconvertError(f"{option} {path}: cannot write in {parent} (permission denied); choose another path")


def check_outputs(outputs: dict[str, tuple[Path | None, str]], overwrite: bool) -> None:
    """:func:`check_output` for every given output (``{option: (path or None, example file name)}``), and refuse two
    options naming the same file.

    Raises:
        PfconvertError: see :func:`check_output`, or two options name one file.
    """
    seen: dict[str, str] = {}
    for option, (path, example) in outputs.items():
        if path is None:
            continue
        check_output(option, path, overwrite, example)
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise PfconvertError(f"{seen[key]} and {option} both name {path}; the second would replace the first: give "
                                 "two different paths")
        seen[key] = option
