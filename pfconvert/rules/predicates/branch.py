"""Residual structure: ``residual`` and ``branch_role``, read from the traced dataflow
(:mod:`pfconvert.graph.residual`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ._registry import register_predicate

if TYPE_CHECKING:
    from ...graph.match import Layout, Site


@register_predicate("residual", bool | None, Field(None, description="true: the layer lies in a residual branch "
                    "(between a fork and the addition that joins it, in the traced dataflow); false: it does not"),
                    example=True)
def residual(value: bool, site: Site, layout: Layout) -> bool:
    return site.branch.residual == value


@register_predicate("branch_role", list[Literal["spatial", "first", "last", "only"]] | None, Field(
    None, description="the conv's role in the smallest residual branch holding it, one or a list: `spatial` (the "
    "branch also holds a pointwise conv on its feature map, before or after it: a bottleneck's or DarkNet block's "
    "3x3, an inverted residual's depthwise conv), `first` / `last` (first / last of two or more k x k convs: a "
    "BasicBlock's conv1 / conv2), `only` (the branch's single k x k conv)"), example="spatial")
def branch_role(roles: list[str], site: Site, layout: Layout) -> bool:
    return bool(site.branch.roles.intersection(roles))
