"""Position: ``stages`` and ``blocks``, read from module paths (:func:`pfconvert.graph.stage_block`); a negative
index counts from the end (``-1``: the last stage, the last block of each stage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ._registry import register_predicate

if TYPE_CHECKING:
    from ...graph.match import Layout, Site


def _at(index: int | None, wanted: list[int], count: int) -> bool:
    return index is not None and any(index == (i if i >= 0 else count + i) for i in wanted)


@register_predicate("stages", list[int] | None, Field(None, description="0-based stage indices (`layer1` -> 0, "
                    "`stages.0` / `blocks.0` -> 0; negative counts from the end: -1 is the last stage)"), example=-1)
def stages(wanted: list[int], site: Site, layout: Layout) -> bool:
    return _at(site.stage, wanted, layout.stage_count)


@register_predicate("blocks", list[int] | None, Field(None, description="0-based block indices within a stage "
                    "(negative counts from the end)"), example=-1)
def blocks(wanted: list[int], site: Site, layout: Layout) -> bool:
    return _at(site.block, wanted, layout.block_count(site.path))
