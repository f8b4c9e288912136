"""Output files of a command checked before any work starts: a long search must not end in a traceback because
``--write-rule`` names a folder, and two options must not name the same file (the second would replace the first)."""

from __future__ import annotations

import os
from pathlib import Path

from .._files import check_output_file
from ..errors import PfconvertError

__all__ = ["check_outputs", "check_output"]


def check_output(option: str, path: Path, overwrite: bool, example: str) -> None:
    """Refuse an output ``path`` that cannot be written (:func:`pfconvert._files.check_output_file`, the one file
    guard: a folder, a name under a file, an unwritable folder, an existing file without ``overwrite``); a ``.png``
    option must name a .png file.

    Raises:
        OutputExistsError: the file exists and not ``overwrite``.
        PfconvertError: any other refusal (one line naming the option, the path and the fix).
    """
    check_output_file(path, overwrite, option=option, example=example,
                      suffix=".png" if example.endswith(".png") else None)


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
