"""Old names kept for one release: each use warns (``DeprecationWarning``) and names the new one. (The command
line's old option names warn with the same line on stderr: :func:`pfconvert.cli._options.renamed`.)

Example::

    class Record:
        def to_dict(self) -> dict: ...
        as_dict = deprecated_alias("as_dict", "to_dict")

    @renamed_kwargs(calib_images="bn_recalib_images")
    def study(*, bn_recalib_images: int = 512) -> None: ...
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deprecated_alias", "renamed_kwargs", "deprecation_message", "REMOVED_IN"]

REMOVED_IN = "0.2"
"""The release that drops the old names."""

F = TypeVar("F", bound=Callable[..., Any])


def deprecation_message(old: str, new: str) -> str:
    """The one line every old name warns with (the command line prints it for its old option names)."""
    return f"{old} is deprecated and will be removed in pfconvert {REMOVED_IN}; use {new}"


def _warn(old: str, new: str) -> None:
    warnings.warn(deprecation_message(old, new), DeprecationWarning, stacklevel=3)


def deprecated_alias(old: str, new: str) -> Any:
    """A method ``old`` that warns and calls the method ``new`` of the same object."""

    def alias(self: Any, *args: Any, **kwargs: Any) -> Any:
        _warn(f"{type(self).__name__}.{old}()", f"{new}()")
        return getattr(self, new)(*args, **kwargs)

    alias.__name__ = old
    alias.__doc__ = f"Deprecated name of :meth:`{new}` (removed in pfconvert {REMOVED_IN})."
    return alias


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Let a function take its old keyword names (``old="new"``) for one release, with a warning."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__name__}() got both {old}= (deprecated) and {new}=")
                    _warn(f"{func.__name__}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
