"""Names: ``path``, ``path_regex`` and ``exclude`` on the qualified module name, ``parent`` on the parent's class."""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from ._registry import register_predicate

if TYPE_CHECKING:
    from ...graph.match import Layout, Site


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return value


def _any_glob(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


@register_predicate("path", list[str] | None, Field(None, description="fnmatch globs on the qualified module name "
                    "(`layer*.conv2`); any may match"), example="layer*.conv2")
def path(patterns: list[str], site: Site, layout: Layout) -> bool:
    return _any_glob(site.path, patterns)


@register_predicate("path_regex", Annotated[str, AfterValidator(_compiles)] | None, Field(
    None, description="a regular expression searched in the qualified name"), example=r"conv\d")
def path_regex(pattern: str, site: Site, layout: Layout) -> bool:
    return re.search(pattern, site.path) is not None


@register_predicate("exclude", list[str] | None, Field(None, description="fnmatch globs of qualified names never "
                    "matched"), example="stem*")
def exclude(patterns: list[str], site: Site, layout: Layout) -> bool:
    return not _any_glob(site.path, patterns)


@register_predicate("parent", list[str] | None, Field(None, description="fnmatch globs on the class name of the "
                    "parent module (`Bottleneck`)"), example="Bottleneck")
def parent(patterns: list[str], site: Site, layout: Layout) -> bool:
    return _any_glob(site.parent_type, patterns)
