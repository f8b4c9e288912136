"""Selection: ``every_nth`` (with ``offset``) thins a rule's own matches, in forward order, once every layer is
assigned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ._registry import register_selection

if TYPE_CHECKING:
    from ...graph.match import Match


@register_selection("every_nth", int | None, Field(None, ge=1, description="keep every n-th match of this rule (in "
                    "forward order), starting at `offset`"), example=2,
                    params={"offset": (int, Field(0, ge=0, description="first match index kept by `every_nth`"))})
def every_nth(spec: Any, matches: Sequence[Match]) -> list[Match]:
    n, offset = spec.every_nth, spec.offset
    return [m for i, m in enumerate(matches) if i >= offset and (i - offset) % n == 0]
