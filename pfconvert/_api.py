"""Argument checks of the public library API: :func:`checked` checks each argument against the function's type
annotations before the function runs, so a wrong type (``pfconvert.load(None)``, ``pfconvert.finetune(path, {})``)
is a one-line :class:`~pfconvert.errors.UsageError` (a ``TypeError``) naming the function, the argument, what it
takes and what it got, not an ``AttributeError`` from deep inside.

The check is by ``isinstance`` on what annotations say: classes, ``X | None`` unions, ``Literal``, ``Any`` and
generic containers (their element types are checked for tuples; others by their container type only). Numbers follow
the numeric tower (an ``int`` is a ``float``), but ``bool`` is not accepted for ``int``.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, TypeVar

from .errors import UsageError

__all__ = ["checked", "describe"]

F = TypeVar("F", bound=Callable[..., Any])


def checked(fn: F) -> F:
    """Wrap ``fn`` so that its arguments are checked against its annotations first (see the module docstring)."""
    if getattr(fn, "__pfconvert_checked__", False):
        return fn
    signature = inspect.signature(fn)
    hints: dict[str, Any] | None = None

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal hints
        if hints is None:
            hints = typing.get_type_hints(fn)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"pfconvert.{fn.__name__}: {exc}") from None
        for name, value in bound.arguments.items():
            hint = hints.get(name)
            kind = signature.parameters[name].kind
            if hint is None or kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if not matches(value, hint):
                raise UsageError(f"pfconvert.{fn.__name__}: argument '{name}' takes {describe(hint)}, not "
                                 f"{_shown(value)}")
        return fn(*args, **kwargs)

    wrapper.__pfconvert_checked__ = True  # type: ignore[attr-defined]
    return typing.cast(F, wrapper)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (as far as the module docstring says it checks)."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, (tuple, list)):  # a list stands for a tuple (input_size=[3, 224, 224])
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args)))
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is not None:
        hint = origin
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        if issubclass(hint, PurePath) and isinstance(value, PurePath):
            return True
        return isinstance(value, hint)
    return True  # an annotation this check does not understand: let the function decide


def describe(hint: Any) -> str:
    """An annotation in words for a message: ``str | Path | None`` -> ``a str, a Path or None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(arg) for arg in typing.get_args(hint)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is None or hint is type(None):
        return "None"
    if origin is tuple:
        args = typing.get_args(hint)
        if args and args[-1] is not Ellipsis:
            return f"a tuple of {len(args)} ({', '.join(describe(a).removeprefix('a ').removeprefix('an ') for a in args)})"
        return "a tuple"
    if origin is collections.abc.Callable:
        return "a callable"
    cls = origin or hint
    name = getattr(cls, "__name__", str(hint))
    if getattr(cls, "__module__", "").startswith("torch.nn"):
        name = f"nn.{name}"
    return f"{'an' if name[:1].lower() in 'aeiou' or name.startswith('nn.') else 'a'} {name}"


def _shown(value: Any) -> str:
    """The wrong value in a few words: its type, and its value when that is short and simple."""
    if value is None:
        return "None"
    kind = type(value).__name__
    if not isinstance(value, (str, int, float, bool, PurePath, dict, list, tuple)):
        return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
    text = repr(value).splitlines()[0] if repr(value) else ""
    return f"{kind} {text[:40] + '...' if len(text) > 40 else text}"
