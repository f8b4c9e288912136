"""Conv geometry: ``depthwise``, ``groups``, ``kernel_size``, ``stride``, ``dilation``, ``same_channels``.

Read from the layer's :class:`~pfconvert.graph.geometry.ConvGeometry`; an attention site satisfies them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field

from ._registry import register_predicate

if TYPE_CHECKING:
    from ...graph.match import Layout, Site


def _positive(values: list[int]) -> list[int]:
    if any(v < 1 for v in values):
        raise ValueError("must be positive integers")
    return values


Sizes = Annotated[list[int], Field(min_length=1), AfterValidator(_positive)]
"""One or more positive integers (a scalar stands for a one-element list)."""


@register_predicate("depthwise", bool | None, Field(None, description="true: `groups == in_channels` (and out a "
                    "multiple of in); false: `groups == 1`"), example=True, conv_only=True)
def depthwise(value: bool, site: Site, layout: Layout) -> bool:
    g = site.geometry
    return g.depthwise if value else g.dense  # type: ignore[union-attr]


@register_predicate("groups", list[Literal["dense", "grouped", "depthwise", "any"]] | None, Field(
    None, description="filter grouping, one or a list: `dense` (`groups == 1`), `grouped` (1 < groups, not "
    "depthwise: ResNeXt, RegNet), `depthwise` (as `depthwise: true`) or `any`"), example="grouped", conv_only=True)
def groups(kinds: list[str], site: Site, layout: Layout) -> bool:
    return any(kind == "any" or getattr(site.geometry, kind) for kind in kinds)


@register_predicate("kernel_size", Sizes | None, Field(None, description="allowed square kernel sizes"), example=3,
                    conv_only=True)
def kernel_size(sizes: list[int], site: Site, layout: Layout) -> bool:
    k = site.geometry.kernel  # type: ignore[union-attr]
    return k[0] == k[1] and k[0] in sizes


@register_predicate("stride", Sizes | None, Field(None, description="allowed strides"), example=1, conv_only=True)
def stride(strides: list[int], site: Site, layout: Layout) -> bool:
    s = site.geometry.stride  # type: ignore[union-attr]
    return s[0] == s[1] and s[0] in strides


@register_predicate("dilation", Sizes | None, Field(None, description="allowed dilations"), example=1,
                    conv_only=True)
def dilation(dilations: list[int], site: Site, layout: Layout) -> bool:
    d = site.geometry.dilation  # type: ignore[union-attr]
    return d[0] == d[1] and d[0] in dilations


@register_predicate("same_channels", bool | None, Field(None, description="require `in_channels == out_channels`"),
                    example=True, conv_only=True)
def same_channels(value: bool, site: Site, layout: Layout) -> bool:
    g = site.geometry
    return (g.in_channels == g.out_channels) == value  # type: ignore[union-attr]
