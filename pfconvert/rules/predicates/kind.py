"""Layer kind: ``op``, what kind of layer a rule targets (every rule has one; ``conv2d`` unless it says otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ...ops._registry import SITE_KINDS
from ._registry import register_predicate

if TYPE_CHECKING:
    from ...graph.match import Layout, Site


@register_predicate("op", Literal[SITE_KINDS], Field(  # type: ignore[valid-type]
    "conv2d", description="layer kind: `conv2d` (any `nn.Conv2d` subclass, incl. timm's Conv2dSame/StdConv2d, and "
    "CondConv2d) or `attention` (timm `Attention` token mixers of ViT-style blocks)"), example="conv2d")
def kind(value: str, site: Site, layout: Layout) -> bool:
    return site.kind == value
