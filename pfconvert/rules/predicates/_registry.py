"""The match-predicate registry: one registration per ``match:`` key holds everything pfconvert knows about it.

A predicate is a field of a rule's ``match`` (its type, default and description, as a pydantic annotation and
``Field``) and either

- a **check** ``(value, site, layout) -> bool``, registered with :func:`register_predicate`: whether a candidate
  layer (a :class:`~pfconvert.graph.match.Site`) satisfies the value a rule gave; ``conv_only`` checks hold for
  sites without conv geometry (attention); or
- a **selection** ``(spec, matches) -> matches``, registered with :func:`register_selection`: how a rule thins its
  own matches once every site is assigned (``every_nth``); the fields it reads besides its own are its ``params``.

Everything else is derived from the registrations: the rule schema's ``MatchSpec`` (:mod:`pfconvert.rules.schema`),
the matcher's tests of a site (:meth:`MatchSpec.holds <pfconvert.rules.schema.MatchBase.holds>`, called by
:func:`pfconvert.graph.match.find_matches`), the rule-language reference (:mod:`pfconvert.rules.language`) and the
fuzz test's keys. Every public module of this package is a predicate module and is imported by
:func:`load_builtin_predicates`; so is every module named by a ``pfconvert.rules.predicates`` entry point. See
``docs/extending.md``.

Checks see a site's attributes only (path, kind, parent_type, stage, block, branch, geometry) and the model's
:class:`~pfconvert.graph.match.Layout` (stage and block counts), so this package imports neither torch nor the graph.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from ...graph.match import Layout, Match, Site

__all__ = ["Predicate", "register_predicate", "register_selection", "list_predicates", "get_predicate",
           "predicate_fields", "load_builtin_predicates", "takes_list"]

Check = Callable[[Any, "Site", "Layout"], bool]
Select = Callable[[Any, "Sequence[Match]"], "list[Match]"]  # (the MatchSpec, one rule's matches) -> kept


@dataclass(frozen=True)
class Predicate:
    """One registered ``match:`` key (see the module docstring)."""

    name: str
    annotation: Any
    field: FieldInfo
    example: Any
    """A value a rule may give (tests and the fuzz test use it)."""
    check: Check | None = None
    select: Select | None = None
    conv_only: bool = False
    params: Mapping[str, tuple[Any, FieldInfo]] = field(default_factory=dict)
    """Further ``match:`` fields that only parametrize this one (``offset`` of ``every_nth``)."""
    module: str = ""

    @property
    def fields(self) -> dict[str, tuple[Any, FieldInfo]]:
        """The ``match:`` fields this registration owns: its own, then its params."""
        return {self.name: (self.annotation, self.field), **self.params}

    def holds(self, value: Any, site: Site, layout: Layout) -> bool:
        """Whether ``site`` satisfies ``value`` (a selection holds for every site: it acts afterwards)."""
        if self.check is None or (self.conv_only and site.geometry is None):
            return True
        return self.check(value, site, layout)


_PREDICATES: dict[str, Predicate] = {}
_LOADED = False


def _add(pred: Predicate) -> None:
    for name in pred.fields:
        owner = next((p for p in _PREDICATES.values() if name in p.fields and p.name != pred.name), None)
        if owner is not None:
            raise ValueError(f"match field {name!r} is registered twice ({owner.module} and {pred.module})")
    previous = _PREDICATES.get(pred.name)
    if previous is not None and previous.module != pred.module:
        raise ValueError(f"match field {pred.name!r} is registered twice ({previous.module} and {pred.module})")
    if pred.field.description is None:
        raise ValueError(f"match field {pred.name!r} needs a description (the reference is generated from it)")
    _PREDICATES[pred.name] = pred


def register_predicate(name: str, annotation: Any, field: FieldInfo, *, example: Any,
                       conv_only: bool = False) -> Callable[[Check], Check]:
    """Register the decorated check ``(value, site, layout) -> bool`` as the ``match:`` key ``name``.

    ``annotation`` and ``field`` declare the key as a pydantic field (default ``None``: the key is optional; a list
    type also takes a scalar, ``kernel_size: 3`` == ``kernel_size: [3]``). The check is called only when a rule
    gives the key (the value is not None); ``conv_only``: sites without conv geometry (attention) satisfy it.

    Example::

        @register_predicate("bias", bool | None, Field(None, description="true: the conv has a bias"), example=True,
                            conv_only=True)
        def has_bias(value: bool, site: Site, layout: Layout) -> bool:
            return (site.module.bias is not None) == value
    """

    def decorate(check: Check) -> Check:
        _add(Predicate(name, annotation, field, example, check=check, conv_only=conv_only, module=check.__module__))
        return check

    return decorate


def register_selection(name: str, annotation: Any, field: FieldInfo, *, example: Any,
                       params: Mapping[str, tuple[Any, FieldInfo]] | None = None) -> Callable[[Select], Select]:
    """Register the decorated selection ``(spec, matches) -> kept matches`` as the ``match:`` key ``name``: it
    thins one rule's matches (in forward order) after every site is assigned; it runs when the rule gives ``name``.
    ``params`` declares further fields it reads from ``spec``."""

    def decorate(select: Select) -> Select:
        _add(Predicate(name, annotation, field, example, select=select, params=dict(params or {}),
                       module=select.__module__))
        return select

    return decorate


def load_builtin_predicates() -> None:
    """Import every predicate module of this package and of installed ``pfconvert.rules.predicates`` entry points
    (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module(__package__)  # type: ignore[arg-type]
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    for entry in entry_points(group="pfconvert.rules.predicates"):
        importlib.import_module(entry.value.split(":")[0])


def list_predicates() -> list[Predicate]:
    """Every registered predicate: ``op`` (the layer kind) first, then by module, then in registration order (the
    order of the ``match`` fields, whatever imported the modules first)."""
    load_builtin_predicates()
    order = {name: index for index, name in enumerate(_PREDICATES)}
    return sorted(_PREDICATES.values(), key=lambda p: (p.name != "op", p.module, order[p.name]))


def get_predicate(name: str) -> Predicate:
    """The registered predicate ``name`` (KeyError for an unknown one)."""
    load_builtin_predicates()
    return _PREDICATES[name]


def predicate_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every ``match:`` field, in reference order: name -> (annotation, pydantic field)."""
    return {name: spec for pred in list_predicates() for name, spec in pred.fields.items()}


def takes_list(annotation: Any) -> bool:
    """Whether a field of this type is a list (so that a scalar may stand for a one-element list)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return True
    if origin is typing.Annotated:
        return takes_list(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(takes_list(arg) for arg in args if arg is not type(None))
    return False
